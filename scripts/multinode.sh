#!/usr/bin/env bash
# Simulates a three-node Kubernetes cluster on one machine: each "node" is a
# network namespace on a shared L2 segment (192.0.2.0/24, a bridge in a
# "switch" namespace), with its own pod CIDR carved from 10.244.0.0/16 and
# host-gw routes to the other nodes. nswire runs as each node's CNI plugin
# (`ip netns exec NODE cnitool ...`). Pods on different nodes reach each
# other by IP without NAT; traffic leaving the cluster CIDR is masqueraded.
# Usage (root): scripts/multinode.sh     Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${NSWIRE_REF_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/nswire/ref-v1.10.0}"
make -s build
work=$(mktemp -d)
p=nswmn
cleanup() {
	for i in 1 2 3; do
		[[ -e /var/run/netns/$p-pod$i ]] && ip netns exec $p-node$i env CNI_PATH="$PWD/bin" NETCONFPATH="$work/node$i" \
			CNI_CACHE_DIR="$work/cache$i" "$ref/cnitool" del k8s-pod-network /var/run/netns/$p-pod$i 2>/dev/null || true
	done
	for ns in $(ip netns list | awk '{print $1}' | grep "^$p-" || true); do ip netns del "$ns"; done
	rm -rf "$work"
}
trap cleanup EXIT

ip netns add $p-switch
ip -n $p-switch link add lan0 type bridge
ip -n $p-switch link set lan0 up
plug() { # plug NS ADDR: connect NS to the switch
	ip -n $p-switch link add "$1-l" type veth peer name eth-lan netns "$1"
	ip -n $p-switch link set "$1-l" master lan0 up
	ip -n "$1" addr add "$2/24" dev eth-lan
	ip -n "$1" link set eth-lan up
	ip -n "$1" link set lo up
}
ip netns add $p-outside
plug $p-outside 192.0.2.100

for i in 1 2 3; do
	ip netns add $p-node$i
	plug $p-node$i 192.0.2.$i
	mkdir -p "$work/node$i"
	cat >"$work/node$i/10-k8s.conflist" <<JSON
{"cniVersion":"1.1.0","name":"k8s-pod-network","plugins":[{"type":"nswire","bridge":"cni0",
 "nonMasqueradeCIDRs":["10.244.0.0/16"],
 "ipam":{"type":"nswire-ipam","dataDir":"$work/ipam$i","ranges":[[{"subnet":"10.244.$i.0/24"}]]}}]}
JSON
done
for i in 1 2 3; do for j in 1 2 3; do
	[[ $i == "$j" ]] || ip -n $p-node$i route add 10.244.$j.0/24 via 192.0.2.$j
done; done

for i in 1 2 3; do
	ip netns add $p-pod$i
	echo "== node$i: ADD pod$i"
	ip netns exec $p-node$i env CNI_PATH="$PWD/bin" NETCONFPATH="$work/node$i" CNI_CACHE_DIR="$work/cache$i" \
		"$ref/cnitool" add k8s-pod-network /var/run/netns/$p-pod$i >/dev/null
	ip -n $p-pod$i -br addr show eth0
done

ip netns exec $p-outside socat TCP-LISTEN:9100,fork,reuseaddr SYSTEM:'echo $SOCAT_PEERADDR' &
for i in 1 2 3; do
	ip netns exec $p-pod$i socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo $SOCAT_PEERADDR' &
done
sleep 0.3
for i in 1 2 3; do
	j=$((i % 3 + 1))
	seen=$(ip netns exec $p-pod$i socat -T2 - TCP:10.244.$j.2:80 </dev/null)
	echo "pod$i -> pod$j (10.244.$j.2): server saw $seen (pod IP: no NAT inside the cluster)"
	[[ $seen == 10.244.$i.2 ]]
	seen=$(ip netns exec $p-pod$i socat -T2 - TCP:192.0.2.100:9100 </dev/null)
	echo "pod$i -> outside (192.0.2.100): server saw $seen (node IP: masqueraded)"
	[[ $seen == 192.0.2.$i ]]
done
kill $(jobs -p) 2>/dev/null || true
echo "multi-node simulation passed"
