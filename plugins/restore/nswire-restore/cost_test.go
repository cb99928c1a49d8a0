package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/shaping"
)

// TestPassCost measures a pass at N attachments (NSWIRE_RESTORE_SCALE,
// default 40), each publishing a port and every other one shaped: with
// nothing missing, after one map was flushed and after the whole ruleset
// was; and what it is made of: firewall.Check against firewall.Add, and
// shaping.Check, per attachment.
func TestPassCost(t *testing.T) {
	n := 40
	if v, err := strconv.Atoi(os.Getenv("NSWIRE_RESTORE_SCALE")); err == nil {
		n = v
	}
	f := newFixture(t)
	nw := f.network(nil, "10.80.0.0/16")
	f.addMany(t, nw, n)

	t.Logf("N=%d: pass with nothing missing: median %s", n, median(5, func() time.Duration {
		r := f.restore(t)
		if r.Repaired() || r.Live != n {
			t.Fatalf("pass on an intact host: live %d, repaired %v", r.Live, r.Repaired())
		}
		return r.Took
	}))
	f.perAttachment(t, nw)
	for _, what := range [][]string{{"flush", "map", "inet", "nswire", "dnat4any"}, {"flush", "ruleset"}} {
		f.nft(t, what...)
		r := f.restore(t)
		if len(r.Firewall) != n {
			t.Errorf("%v: %d attachments repaired, want %d", what, len(r.Firewall), n)
		}
		t.Logf("N=%d: pass after %v: %s", n, what, r.Took)
	}
	if r := f.restore(t); r.Repaired() {
		t.Errorf("a pass after the repairs repaired again")
	}
	w := f.watch(t)
	for range 3 {
		w.drain()
		f.nft(t, "flush", "ruleset")
		start := time.Now()
		w.next(t, repairDeadline)
		t.Logf("N=%d: watch: ruleset flushed -> pass over in %s", n, time.Since(start))
	}
	if r := f.restore(t); r.Repaired() || len(r.Errors) > 0 {
		t.Errorf("the watcher's passes left something to repair")
	}
}

// addMany ADDs n containers to nw, 8 at a time.
func (f *fixture) addMany(t *testing.T, nw *network, n int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		caps := ports(port(30000+i, 80, "tcp", ""))
		if i%2 == 0 {
			caps["bandwidth"] = map[string]any{"ingressRate": 8e7, "ingressBurst": 8e6, "egressRate": 8e7, "egressBurst": 8e6}
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := nw.tryAdd(fmt.Sprintf("cost-%d", i), caps); err != nil {
				t.Errorf("ADD %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// perAttachment times the calls a pass makes for each attachment.
func (f *fixture) perAttachment(t *testing.T, nw *network) {
	ins, err := intent.Load(intent.Dir(f.host.DataDir, nw.name))
	if err != nil {
		t.Fatal(err)
	}
	fw, err := firewall.New(firewall.Options{NetNSFd: int(f.host.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	var atts []*firewall.Attachment
	for _, in := range ins {
		a, err := in.Attachment()
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
	}
	each := func(what string, call func(int) error) {
		d := median(3, func() time.Duration {
			start := time.Now()
			for i := range atts {
				if err := call(i); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			return time.Since(start)
		})
		t.Logf("N=%d: %-14s %s for all, %s each", len(atts), what, d, d/time.Duration(len(atts)))
	}
	each("firewall.Check", func(i int) error { return fw.Check(atts[i]) })
	each("firewall.Add", func(i int) error { return fw.Add(atts[i]) })
	h := f.host.Handle()
	each("shaping.Check", func(i int) error { return shapingCheck(h, ins[i]) })
}

func shapingCheck(h *netlink.Handle, in intent.Intent) error {
	if in.Bandwidth == nil {
		return nil
	}
	return shaping.Check(h, in.HostIf, in.Limits())
}

func median(n int, f func() time.Duration) time.Duration {
	var ds []time.Duration
	for range n {
		ds = append(ds, f())
	}
	slices.Sort(ds)
	return ds[n/2].Round(10 * time.Microsecond)
}
