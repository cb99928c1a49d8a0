#!/usr/bin/env bash
# Benchmarks nswire against the reference plugin chain in one run (make bench):
# latency, throughput, scale, peak RSS, start-up; writes bench.md and bench.png.
# Usage: scripts/bench.sh [-quick] [flags of scripts/bench]   (as root)
#   OUT=bench.md PNG=bench.png scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build # static and stripped, as shipped
# Built, then exec'd: Ctrl-C and SIGTERM reach the benchmark itself, whose
# handler removes every namespace it made (go run would sit in between).
go build -o bin/nswire-bench ./scripts/bench
exec bin/nswire-bench -out "${OUT:-bench.md}" -png "${PNG:-bench.png}" "$@"
