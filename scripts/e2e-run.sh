#!/usr/bin/env bash
# Runs nswire's end-to-end tests with real clients: cnitool, the reference
# meta-plugins chained after nswire, podman (CNI backend), containerd's CRI
# and the containerd conf_template examples of conf/k8s.
# Usage (root): scripts/e2e-run.sh [go test flags, e.g. -run TestPodman -v]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
exec go test -count=1 -timeout 10m "$@" ./scripts/e2e/
