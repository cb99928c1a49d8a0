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
// RemovePodSandbox, with nswire and with the reference chain: two nodes
// side by side, their sandboxes alternated so both see the same load
// (make bench-k8s).
func BenchmarkCRIPodSandbox(b *testing.B) {
	nodes := map[string]*criNode{
		"nswire": newCRINode(b, newLeaks(b), "nswire.conflist.tmpl"),
		"ref": startCRINode(b, newLeaks(b), refDir, func(n *criNode) string {
			return fmt.Sprintf(refChainTemplate, n.name, testutil.Name("br"), n.DataDir)
		}),
	}
	nodes["nswire"].setPodCIDR(b, "10.244.210.0/24")
	nodes["ref"].setPodCIDR(b, "10.244.211.0/24")
	times := map[string][]time.Duration{}
	for i := 0; b.Loop(); i++ {
		for _, key := range []string{"nswire", "ref"} {
			run, stop := sandbox(b, nodes[key], i)
			times[key+"-run"] = append(times[key+"-run"], run)
			times[key+"-stop"] = append(times[key+"-stop"], stop)
		}
	}
	for what, ds := range times {
		percentiles(b, what, ds)
	}
	b.ReportMetric(0, "ns/op")
}

// sandbox runs and stops one pod with a hostPort on n, timing both.
func sandbox(b *testing.B, n *criNode, i int) (run, stop time.Duration) {
	cfg := n.podConfig(fmt.Sprintf("bench-%d", i))
	cfg.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: 9080}}
	t0 := time.Now()
	p := n.mustRunPod(b, cfg)
	t1 := time.Now()
	n.stopPod(b, p)
	return t1.Sub(t0), time.Since(t1)
}

// percentiles reports the p50, p90 and p99 of ds in milliseconds.
func percentiles(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	for _, p := range []int{50, 90, 99} {
		b.ReportMetric(float64(ds[len(ds)*p/100].Microseconds())/1000, fmt.Sprintf("%s-p%d-ms", what, p))
	}
}
