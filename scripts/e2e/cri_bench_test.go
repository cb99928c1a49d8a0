package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nswire/nswire/pkg/testutil"
)

// refChainTemplate is the reference plugins' equivalent of conf/k8s's
// nswire.conflist.tmpl: bridge + host-local + portmap.
const refChainTemplate = `{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "{{.PodCIDR}}"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

// BenchmarkCRIPodSandbox times what the kubelet waits for through
// containerd, RunPodSandbox with one hostPort and StopPodSandbox +
// RemovePodSandbox, with nswire and with the reference chain in the same
// run: make bench-k8s.
func BenchmarkCRIPodSandbox(b *testing.B) {
	b.Run("nswire", func(b *testing.B) {
		n := newCRINode(b, newLeaks(b), "nswire.conflist.tmpl")
		benchSandboxes(b, n, "10.244.210.0/24")
	})
	b.Run("reference", func(b *testing.B) {
		n := startCRINode(b, newLeaks(b), refDir, func(n *criNode) string {
			return fmt.Sprintf(refChainTemplate, n.name, testutil.Name("br"), n.DataDir)
		})
		benchSandboxes(b, n, "10.244.211.0/24")
	})
}

func benchSandboxes(b *testing.B, n *criNode, cidr string) {
	n.setPodCIDR(b, cidr)
	var run, stop []time.Duration
	for i := 0; b.Loop(); i++ {
		cfg := n.podConfig(fmt.Sprintf("bench-%d", i))
		cfg.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: 9080}}
		t0 := time.Now()
		p := n.mustRunPod(b, cfg)
		t1 := time.Now()
		n.stopPod(b, p)
		run, stop = append(run, t1.Sub(t0)), append(stop, time.Since(t1))
	}
	percentiles(b, "run", run)
	percentiles(b, "stop", stop)
}

// percentiles reports the p50, p90 and p99 of ds in milliseconds.
func percentiles(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	for _, p := range []int{50, 90, 99} {
		b.ReportMetric(float64(ds[len(ds)*p/100].Microseconds())/1000, fmt.Sprintf("%s-p%d-ms", what, p))
	}
	b.ReportMetric(0, "ns/op")
}
