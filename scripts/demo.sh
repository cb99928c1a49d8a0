#!/usr/bin/env bash
# nswire demo: wires two network namespaces ("containers") through the
# default conflist with cnitool, the way a runtime would, shows what they
# got, proves traffic, publishes a port, then removes everything it made.
# Usage (root): make demo
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

ref="${NSWIRE_REF_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/nswire/ref-v1.10.0}"
export CNI_PATH="$PWD/bin"
export NETCONFPATH="$(mktemp -d)"
cp conf/10-nswire.conflist "$NETCONFPATH/"
a=nswdemo-a b=nswdemo-b
cnitool() { "$ref/cnitool" "$@"; }

cleanup() {
	say "cleaning up"
	for ns in $a $b; do
		[[ -e /var/run/netns/$ns ]] || continue
		cnitool del nswire "/var/run/netns/$ns" || true
		ip netns del "$ns" || true
	done
	[[ -n "${server:-}" ]] && kill "$server" 2>/dev/null || true
	ip link del nswire0 2>/dev/null || true
	nft delete table inet nswire 2>/dev/null || true
	nft delete table bridge nswire 2>/dev/null || true
	rm -rf "$NETCONFPATH" /var/lib/cni/networks/nswire
	echo "left behind: $(ip -o link show | grep -c ' nsw[0-9a-f]\{12\}[:@]' || true) nswire links"
}
trap cleanup EXIT

say "building nswire into ./bin"
run make -s build

say "creating two namespaces that play containers"
run ip netns add $a
run ip netns add $b

say "ADD: cnitool add nswire (conf/10-nswire.conflist); container b publishes host port 8080 -> 80"
run cnitool add nswire /var/run/netns/$a
ports='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
CAP_ARGS=$ports run cnitool add nswire /var/run/netns/$b

say "inside container a"
run ip netns exec $a ip -br addr
run ip netns exec $a ip route
ipa=$(ip netns exec $a ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
ipb=$(ip netns exec $b ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
gw=$(ip netns exec $a ip route show default | awk '{print $3}')

say "on the host: the bridge and the host ends of the veths"
run ip -br addr show nswire0
run ip -br link show master nswire0

say "traffic: a -> b ($ipb), b -> a ($ipa), a -> gateway ($gw)"
run ip netns exec $a ping -c 2 -W 2 "$ipb"
run ip netns exec $b ping -c 2 -W 2 "$ipa"
run ip netns exec $a ping -c 2 -W 2 "$gw"

say "published port: a tiny HTTP server in b on :80, reached from the host on 127.0.0.1:8080 and $gw:8080"
ip netns exec $b socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo HTTP/1.0 200 OK; echo; echo hello from container b' &
server=$!
sleep 0.3
run socat -T2 - TCP:127.0.0.1:8080 </dev/null
run socat -T2 - TCP:"$gw":8080 </dev/null
say "hairpin: container a reaches b's published port through the host"
run ip netns exec $a socat -T2 - TCP:"$gw":8080 </dev/null

say "CHECK: both attachments are as ADD left them (a runtime repeats the capability args)"
run cnitool check nswire /var/run/netns/$a
CAP_ARGS=$ports run cnitool check nswire /var/run/netns/$b
echo "CHECK passed"

say "DEL both"
run cnitool del nswire /var/run/netns/$a
CAP_ARGS=$ports run cnitool del nswire /var/run/netns/$b
echo "demo finished: two containers wired, pinged, port published and answered, checked and deleted"
