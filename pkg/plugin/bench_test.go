package plugin

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

// BenchmarkVerbsInProcess calls the ADD and DEL handlers in this process,
// warm: no fork, exec, Go runtime start, package inits or libcni. It is
// what a verb costs beyond starting a plugin process (what a resident
// daemon would spend on it), and the driver to profile the handlers with
// -cpuprofile. The handlers act in the process's network namespace, so it
// runs only inside a private one:
//
//	unshare -n go test -run '^$' -bench VerbsInProcess ./pkg/plugin
func BenchmarkVerbsInProcess(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	links, err := netlink.LinkList()
	if err != nil {
		b.Fatal(err)
	}
	if len(links) != 1 {
		b.Skip("run inside a private network namespace: unshare -n go test -run '^$' -bench VerbsInProcess ./pkg/plugin")
	}
	for _, dual := range []bool{false, true} {
		b.Run(fmt.Sprintf("dual=%v", dual), func(b *testing.B) { benchVerbs(b, dual) })
	}
}

func benchVerbs(b *testing.B, dual bool) {
	ranges := `[{"subnet":"10.60.0.0/16"}]`
	bridge := "benchv4"
	if dual {
		ranges += `,[{"subnet":"fd00:60::/64"}]`
		bridge = "benchdual"
	}
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"nswire","bridge":%q,"mtu":1500,"ipMasq":true,
		"capabilities":{"portMappings":true},
		"runtimeConfig":{"portMappings":[{"hostPort":20000,"containerPort":80,"protocol":"tcp"}]},
		"ipam":{"type":"nswire-ipam","dataDir":%q,"ranges":[%s]}}`, bridge, bridge, b.TempDir(), ranges))
	// The handlers print their result on stdout.
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = devNull
	defer func() { os.Stdout = stdout; devNull.Close() }()

	cycle := func(i int) (add, del time.Duration) {
		b.StopTimer()
		c := testutil.NewNS(b)
		args := &skel.CmdArgs{ContainerID: fmt.Sprintf("bench%d", i), Netns: c.Path(), IfName: "eth0", StdinData: conf}
		b.StartTimer()
		t0 := time.Now()
		if err := Add(args); err != nil {
			b.Fatalf("ADD: %v", err)
		}
		t1 := time.Now()
		if err := Del(args); err != nil {
			b.Fatalf("DEL: %v", err)
		}
		return t1.Sub(t0), time.Since(t1)
	}
	cycle(-1) // the bridge, the tables and the IPAM store are made once
	b.ResetTimer()
	var add, del time.Duration
	for i := range b.N {
		a, d := cycle(i)
		add, del = add+a, del+d
	}
	b.ReportMetric(float64(add.Microseconds())/float64(b.N), "add-µs")
	b.ReportMetric(float64(del.Microseconds())/float64(b.N), "del-µs")
}
