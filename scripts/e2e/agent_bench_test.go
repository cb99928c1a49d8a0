package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nswire/nswire/pkg/testutil"
)

// BenchmarkAgentChurn measures one node's agent against a real API server
// while 100 other Nodes are created and then deleted: the time until its
// routes converge each way, the CPU it spends, and its memory at idle and
// at the peak (make bench-k8s).
func BenchmarkAgentChurn(b *testing.B) {
	if _, err := testutil.K8sTools(); err != nil {
		b.Skipf("no control plane binaries: %v", err)
	}
	const others = 100
	for b.Loop() {
		c := newCluster(b)
		c.createNode(1, "")
		n := c.addNode(1)
		n.waitReady(b)
		time.Sleep(5 * time.Second) // settle: idle RSS and CPU
		idle, cpu0 := procMem(b, n.agent.Pid(), "VmRSS"), procCPU(b, n.agent.Pid())
		time.Sleep(10 * time.Second)
		idleCPU := procCPU(b, n.agent.Pid()) - cpu0
		start := time.Now()
		for i := 10; i < 10+others; i++ {
			c.createNode(i, "")
		}
		created := time.Now()
		n.waitRoutes(b, 2*others)
		upAPI, up := created.Sub(start), time.Since(created)
		start = time.Now()
		for i := 10; i < 10+others; i++ {
			c.deleteNode(fmt.Sprintf("node-%d", i))
		}
		deleted := time.Now()
		n.waitRoutes(b, 0)
		downAPI, down := deleted.Sub(start), time.Since(deleted)
		churnCPU := procCPU(b, n.agent.Pid()) - cpu0 - idleCPU
		b.ReportMetric(float64(idle)/1024, "idle-rss-MiB")
		b.ReportMetric(float64(procMem(b, n.agent.Pid(), "VmHWM"))/1024, "peak-rss-MiB")
		b.ReportMetric(float64(idleCPU.Milliseconds())/10, "idle-cpu-ms/s")
		b.ReportMetric(float64(churnCPU.Milliseconds()), "churn-cpu-ms")
		// The API calls themselves, then the agent's lag behind the last one.
		b.ReportMetric(upAPI.Seconds(), "create-100-s")
		b.ReportMetric(up.Seconds(), "routes-after-last-create-s")
		b.ReportMetric(downAPI.Seconds(), "delete-100-s")
		b.ReportMetric(down.Seconds(), "routes-after-last-delete-s")
	}
	b.ReportMetric(0, "ns/op")
}

// procMem reads a kB field of /proc/<pid>/status.
func procMem(b testing.TB, pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.Fields(rest)[0])
			return kb
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// procCPU is the user+system time the process has used.
func procCPU(b testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data)[strings.LastIndex(string(data), ")")+2:])
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100
}
