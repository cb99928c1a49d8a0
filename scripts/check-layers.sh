#!/usr/bin/env bash
# Fails when a product package imports what it must not (make test runs it):
# test helpers (pkg/testutil and below) are for tests only; pkg/config holds
# the wire format and must not depend on the concerns it configures.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=github.com/nswire/nswire
bad=$(go list -f '{{.ImportPath}}: {{join .Imports " "}}' ./pkg/... ./plugins/... |
	grep -v "^$mod/pkg/testutil" | grep " $mod/pkg/testutil" || true)
if [[ -n "$bad" ]]; then
	echo "check-layers: product packages import $mod/pkg/testutil:" >&2
	echo "$bad" >&2
	exit 1
fi
bad=$(go list -f '{{join .Imports "\n"}}' ./pkg/config | grep -E "^$mod/pkg/(firewall|shaping|link|ipam)$" || true)
if [[ -n "$bad" ]]; then
	echo "check-layers: pkg/config imports concern packages:" >&2
	echo "$bad" >&2
	exit 1
fi
