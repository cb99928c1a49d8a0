package firewall

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// benchVerb times Add and Del of one attachment separately, with
// `existing` other attachments in place. plugin mimics the plugin binary:
// New in the caller's namespace, one verb, Close.
func benchVerb(b *testing.B, existing int, dual, plugin bool) {
	needRoot(b)
	var opts Options
	if plugin {
		// The plugin acts in its own namespace (fd 0) from an unlocked
		// thread: run the test binary under `unshare -n` for this case.
		if os.Getenv("NSWIRE_BENCH_UNSHARED") == "" {
			b.Skip("plugin mode: run under unshare -n with NSWIRE_BENCH_UNSHARED=1")
		}
	} else {
		opts.NetNSFd = int(newNS(b).Fd())
	}
	fw, err := New(opts)
	must(b, err, "New")
	b.Cleanup(fw.Close)
	_, s4, _ := net.ParseCIDR("10.1.0.0/16")
	_, s6, _ := net.ParseCIDR("fd00:1::/64")
	n := Network{Name: "bench", Bridge: "brb", Subnets: []*net.IPNet{s4}, IPMasq: true, Isolation: true, ICC: true}
	if dual {
		n.Subnets = append(n.Subnets, s6)
	}
	for i := 0; i < existing; i++ {
		must(b, fw.Add(fakeAtt(n, i, 20000+i)), "Add %d", i)
	}
	a := fakeAtt(n, existing, 10000)
	if dual {
		a.IPs = append(a.IPs, &net.IPNet{IP: net.ParseIP(fmt.Sprintf("fd00:1::%x", existing+10)), Mask: net.CIDRMask(64, 128)})
	}
	open := func() *Firewall { return fw }
	done := func(*Firewall) {}
	if plugin {
		open = func() *Firewall {
			f, err := New(Options{})
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
		done = (*Firewall).Close
	}
	var add, del time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		f := open()
		if err := f.Add(a); err != nil {
			b.Fatal(err)
		}
		done(f)
		t1 := time.Now()
		f = open()
		if err := f.Del(a); err != nil {
			b.Fatal(err)
		}
		done(f)
		t2 := time.Now()
		add += t1.Sub(t0)
		del += t2.Sub(t1)
	}
	b.ReportMetric(float64(add.Microseconds())/float64(b.N), "add-µs")
	b.ReportMetric(float64(del.Microseconds())/float64(b.N), "del-µs")
}

func BenchmarkVerbs(b *testing.B) {
	for _, n := range []int{10, 1000} {
		for _, dual := range []bool{false, true} {
			for _, plugin := range []bool{false, true} {
				b.Run(fmt.Sprintf("existing=%d/dual=%v/plugin=%v", n, dual, plugin), func(b *testing.B) { benchVerb(b, n, dual, plugin) })
			}
		}
	}
}
