#!/usr/bin/env bash
# Benchmarks nswire against the reference plugins in one run (make bench).
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/ ./plugins/main/nswire ./plugins/ipam/nswire-ipam
go run ./scripts/bench -n "${N:-200}" -out "${OUT:-bench.md}" "$@"
