#!/usr/bin/env bash
# Builds the real control plane the tests run (etcd, kube-apiserver, kubelet)
# from Go modules, once per pinned version, into the nswire tools cache.
# Usage: scripts/k8s-tools.sh   (idempotent; prints one line per build it does)
set -euo pipefail

ETCD_VERSION=v3.6.16
K8S_VERSION=v1.34.4
cache="${NSWIRE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/nswire}"
export CGO_ENABLED=0

# One build at a time: test packages run in parallel and may all ask.
mkdir -p "$cache"
exec 9>"$cache/.k8s-tools.lock"
flock 9

# quiet CMD... runs CMD and shows its output only when it fails.
quiet() {
	local out
	out=$("$@" 2>&1) || {
		printf '%s\n' "$out" >&2
		return 1
	}
}

# build_to OUT PKG... builds PKGs into OUT.tmp, then renames: an interrupted
# build never leaves a file that looks done.
build_to() {
	local out=$1
	shift
	go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$@"
	mv -f "$out.tmp" "$out"
}

etcd_dir="$cache/etcd-$ETCD_VERSION"
if [[ ! -x "$etcd_dir/etcd" ]]; then
	echo "k8s-tools: building etcd $ETCD_VERSION into $etcd_dir"
	src="$etcd_dir/src"
	mkdir -p "$src"
	cat >"$src/main.go" <<-'EOF'
		// Build-only wrapper: etcd's server as a binary, from its Go module.
		package main

		import (
			"os"

			"go.etcd.io/etcd/server/v3/etcdmain"
		)

		func main() { etcdmain.Main(os.Args) }
	EOF
	printf 'module nswire.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
		"$ETCD_VERSION" >"$src/go.mod"
	ldflags="-s -w"
	(cd "$src" && quiet go mod tidy && build_to "$etcd_dir/etcd" .)
fi

k8s_dir="$cache/k8s-$K8S_VERSION"
if [[ ! -x "$k8s_dir/kube-apiserver" || ! -x "$k8s_dir/kubelet" ]]; then
	echo "k8s-tools: building kube-apiserver and kubelet $K8S_VERSION into $k8s_dir"
	src="$k8s_dir/src"
	mkdir -p "$src"
	# k8s.io/kubernetes requires its staging modules at v0.0.0 through local
	# replaces that do not work from the module cache: replace each one with
	# its published release, v0.<minor>.<patch>.
	kgomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
		sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
	staging=$(sed -n 's|^\t\(k8s\.io/[^ ]*\) => \./staging/.*|\1|p' "$kgomod")
	{
		printf 'module nswire.local/k8s\n\ngo 1.24\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
		for m in $staging; do
			printf 'replace %s => %s v0%s\n' "$m" "$m" "${K8S_VERSION#v1}"
		done
	} >"$src/go.mod"
	printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubelet"\n)\n' \
		>"$src/tools.go"
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	v=k8s.io/component-base/version
	ldflags="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
	(cd "$src" && quiet go mod tidy &&
		build_to "$k8s_dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver &&
		build_to "$k8s_dir/kubelet" k8s.io/kubernetes/cmd/kubelet)
fi
