# nswire: run as root (tests and the demo create namespaces, links, nftables).
GO ?= go
BIN := bin
PREFIX_BIN ?= /opt/cni/bin
PREFIX_CONF ?= /etc/cni/net.d

.PHONY: all build test test-short demo bench bench-k8s install uninstall clean deps

all: build

# Static, stripped: a runtime execs the plugin for every verb, and the
# dynamic loader plus symbol pages cost milliseconds per start.
BUILD_FLAGS := -trimpath -ldflags "-s -w"
export CGO_ENABLED := 0

build:
	$(GO) build $(BUILD_FLAGS) -o $(BIN)/ ./plugins/main/nswire ./plugins/ipam/nswire-ipam ./plugins/agent/nswire-agent ./plugins/restore/nswire-restore

deps:
	bash scripts/deps.sh

# Every test: unit, kernel integration, race detector.
test: deps
	$(GO) vet ./...
	bash scripts/check-layers.sh
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...
	bash scripts/multinode.sh

demo: deps
	bash scripts/demo.sh

bench: deps build
	bash scripts/bench.sh

# Kubernetes paths: RunPodSandbox and StopPodSandbox through containerd's
# CRI, nswire against the reference bridge + host-local + portmap chain in
# the same run; nswire-agent's CPU, memory and convergence under a churn of
# 100 Nodes against a real API server.
bench-k8s: deps
	$(GO) test -run '^$$' -bench CRI -benchtime 40x ./scripts/e2e
	$(GO) test -run '^$$' -bench AgentChurn -benchtime 1x ./scripts/e2e

install: build
	install -d $(PREFIX_BIN) $(PREFIX_CONF)
	install -m 0755 $(BIN)/nswire $(BIN)/nswire-ipam $(BIN)/nswire-restore $(PREFIX_BIN)/
	@if [ -e $(PREFIX_CONF)/10-nswire.conflist ]; then \
		echo "keeping existing $(PREFIX_CONF)/10-nswire.conflist"; \
	else install -m 0644 conf/10-nswire.conflist $(PREFIX_CONF)/; fi

uninstall:
	rm -f $(PREFIX_BIN)/nswire $(PREFIX_BIN)/nswire-ipam $(PREFIX_BIN)/nswire-restore
	@if cmp -s conf/10-nswire.conflist $(PREFIX_CONF)/10-nswire.conflist; then \
		rm -f $(PREFIX_CONF)/10-nswire.conflist; \
	else echo "keeping modified $(PREFIX_CONF)/10-nswire.conflist"; fi

clean:
	rm -rf $(BIN)
