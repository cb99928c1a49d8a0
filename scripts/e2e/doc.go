// Package e2e drives the nswire binaries through the clients that run CNI
// plugins in real life, and checks what they leave in the kernel:
//
//   - cnitool v1.3.1 over every conf/*.conflist (add, check, status, gc,
//     del, with CAP_ARGS for ports, ips, mac and bandwidth),
//   - the reference meta-plugins v1.10.0 (portmap, bandwidth, tuning,
//     firewall) chained after nswire,
//   - podman 4.3 with its CNI backend (two containers, a published port),
//   - containerd 1.6's CRI plugin, driven over CRI as the kubelet drives it
//     (conf_template, pods, hostPorts, bandwidth annotations, teardown,
//     restart), with a locally built pause image,
//   - the containerd conf_template examples of conf/k8s,
//   - nswire-agent on three simulated nodes against a real etcd and
//     kube-apiserver (built from their Go modules by scripts/k8s-tools.sh),
//     authenticated as conf/k8s/nswire-agent.yaml's ServiceAccount,
//   - a real kubelet on a node whose conflist the agent wrote, with
//     containerd: a Pod with a hostPort, and its teardown.
//
// Everything but podman runs inside private "host" network namespaces
// (containerd, the control plane, the agents and the kubelet too, with
// private state, sockets and cgroups);
// podman runs in the machine's own namespace on a unique bridge and
// subnet. Every test removes what it made and ends with a leak check. The
// tests need root; run them with `go test ./scripts/e2e/` or
// scripts/e2e-run.sh.
package e2e
