#!/usr/bin/env bash
# Benchmarks nswire-ipam: in-process ADD+DEL (go test -bench BenchmarkAddDel)
# and the plugin binary against host-local, with 10, 1000 and 10000 existing
# reservations in a temporary dataDir. Prints p50/p99 per operation.
#
#   ITER=200          ADD+DEL pairs per binary run
#   BENCH_DIR=/dev/shm  parent of the temporary dataDirs (default: $TMPDIR)
#   HOST_LOCAL=/usr/lib/cni/host-local
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/nswire-ipam" ./plugins/ipam/nswire-ipam
go test -c -o "$tmp/ipam.test" ./pkg/ipam

echo "== in-process ADD+DEL (ns/op is one ADD plus one DEL)"
"$tmp/ipam.test" -test.run '^$' -test.bench '^BenchmarkAddDel$' -test.benchtime "${BENCHTIME:-2s}" |
	awk '/^BenchmarkAddDel/ {printf "%-40s %10.3f ms/pair\n", $1, $3/1e6}'

echo "== binary (fork+exec included), dataDir under ${BENCH_DIR:-${TMPDIR:-/tmp}}"
printf '%-12s %6s %10s %10s %10s %10s\n' plugin size add-p50 add-p99 del-p50 del-p99
NSWIRE_IPAM_BIN="$tmp/nswire-ipam" NSWIRE_IPAM_BENCH_DIR="${BENCH_DIR:-}" \
	"$tmp/ipam.test" -test.run '^$' -test.bench '^BenchmarkBinaryAddDel$' -test.benchtime "${ITER:-200}x" |
	awk '/^BenchmarkBinaryAddDel/ {
		split($1, p, "/"); sub(/-[0-9]+$/, "", p[3])
		for (i = 5; i < NF; i += 2) m[$(i+1)] = $i
		printf "%-12s %6s %8.2fms %8.2fms %8.2fms %8.2fms\n", p[2], p[3], m["add-p50-ms"], m["add-p99-ms"], m["del-p50-ms"], m["del-p99-ms"]
	}'
