#!/usr/bin/env bash
# Installs what nswire's demo and tests need on Debian, when missing.
# Usage: scripts/deps.sh   (as root; idempotent, quiet when all is there)
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have ping || need+=(iputils-ping)
have nft || need+=(nftables)
have iptables || need+=(iptables)
have socat || need+=(socat)
have conntrack || need+=(conntrack)
have podman || need+=(podman)
have runc || need+=(runc)
have containerd || need+=(containerd)
[[ -x /bin/busybox ]] || need+=(busybox-static)

if ((${#need[@]})); then
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The reference plugins (compared in tests and benchmarks) and cnitool are
# Go programs: installed from the module proxy into the user cache.
ref="${NSWIRE_REF_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/nswire/ref-v1.10.0}"
if [[ ! -x "$ref/host-local" || ! -x "$ref/loopback" || ! -x "$ref/cnitool" ]]; then
	echo "deps: installing reference plugins v1.10.0 and cnitool v1.3.1 into $ref"
	mkdir -p "$ref"
	(cd /tmp && GOBIN="$ref" GOFLAGS=-mod=mod go install \
		github.com/containernetworking/plugins/plugins/main/bridge@v1.10.0 \
		github.com/containernetworking/plugins/plugins/main/ptp@v1.10.0 \
		github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0 \
		github.com/containernetworking/plugins/plugins/meta/portmap@v1.10.0 \
		github.com/containernetworking/plugins/plugins/meta/firewall@v1.10.0 \
		github.com/containernetworking/plugins/plugins/meta/bandwidth@v1.10.0 \
		github.com/containernetworking/plugins/plugins/meta/tuning@v1.10.0 \
		github.com/containernetworking/plugins/plugins/main/loopback@v1.10.0 &&
		GOBIN="$ref" GOFLAGS=-mod=mod go install github.com/containernetworking/cni/cnitool@v1.3.1)
fi

# The real control plane (etcd, kube-apiserver, kubelet) for the agent's
# tests: built from Go modules into the same cache.
bash "$(dirname "$0")/k8s-tools.sh"
