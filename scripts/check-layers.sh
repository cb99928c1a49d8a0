#!/usr/bin/env bash
# Fails when a product package imports what it must not (make test runs it):
# test helpers (pkg/testutil and below) are for tests only.
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
