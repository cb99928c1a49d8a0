package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/restore"
)

// TestRestoreRacesAddDel: passes run back to back, with losses between
// them, while 8 goroutines ADD and DEL through libcni. Afterwards one
// more pass leaves exactly the live attachments' state: CHECK passes for
// each, and no chain or element names an attachment that was deleted.
func TestRestoreRacesAddDel(t *testing.T) {
	f := newFixture(t)
	n := f.network(nil, "10.75.0.0/22")
	ctx, stop := context.WithCancel(context.Background())
	passes := make(chan int, 1)
	go func() { passes <- f.restoreLoop(t, ctx) }()

	const workers, rounds = 8, 8
	var mu sync.Mutex
	var live, dead []*container
	var failedAdds atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []*container
			for r := range rounds {
				id := fmt.Sprintf("race-%d-%d", w, r)
				c, err := n.tryAdd(id, ports(port(20000+w*100+r, 80, "tcp", "")))
				if err != nil {
					// A table deleted under an ADD may fail it (the loop
					// below deletes one far more often than any host);
					// the runtime then DELs.
					if !strings.Contains(err.Error(), "rebuilt") && !strings.Contains(err.Error(), "vanished") {
						t.Errorf("ADD %s: %v", id, err)
					}
					failedAdds.Add(1)
					if err := c.del(); err != nil {
						t.Errorf("DEL of failed ADD %s: %v", id, err)
					}
					mu.Lock()
					dead = append(dead, c)
					mu.Unlock()
					continue
				}
				mine = append(mine, c)
				if r%2 == 1 { // delete every other one, the oldest first
					if err := mine[0].del(); err != nil {
						t.Errorf("DEL %s: %v", mine[0].rt.ContainerID, err)
					}
					mu.Lock()
					dead = append(dead, mine[0])
					mu.Unlock()
					mine = mine[1:]
				}
			}
			mu.Lock()
			live = append(live, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	stop()
	t.Logf("%d passes raced %d ADDs (%d failed on a table deleted under them) and %d DELs",
		<-passes, workers*rounds, failedAdds.Load(), len(dead))
	f.restore(t)
	f.assertExactly(t, n, live, dead)
}

// restoreLoop runs passes until ctx ends, each after a loss: the DNAT
// map, the guard sets or the whole inet table.
func (f *fixture) restoreLoop(t *testing.T, ctx context.Context) int {
	losses := []func(c *nftables.Conn){
		flushSet(inetNswire, "dnat4any"),
		flushSet(bridgeNswire, "guarded"),
		func(c *nftables.Conn) { c.DelTable(inetNswire) },
	}
	i := 0
	for ; ctx.Err() == nil; i++ {
		c, err := nftables.New(nftables.WithNetNSFd(int(f.host.Fd())))
		if err == nil {
			// The whole table once in ten passes, an element set otherwise.
			k := i % 2
			if i%10 == 9 {
				k = 2
			}
			losses[k](c)
			_ = c.Flush() // the table may be missing: nothing lost then
		}
		time.Sleep(5 * time.Millisecond)
		r, err := restore.Restore(ctx, f.opts())
		if err != nil && ctx.Err() == nil {
			t.Errorf("pass %d: %v", i, err)
		}
		for _, e := range r.Errors {
			t.Errorf("pass %d: %v", i, e)
		}
	}
	return i
}

// assertExactly checks that the host holds the firewall state of the
// live attachments of n and of no other.
func (f *fixture) assertExactly(t *testing.T, n *network, live, dead []*container) {
	for _, c := range live {
		if err := c.check(); err != nil {
			t.Errorf("CHECK %s: %v", c.rt.ContainerID, err)
		}
	}
	owned := map[string]string{} // chain, veth or element comment -> attachment
	for _, c := range append(live, dead...) {
		tag := ident.Hex(32, n.name)[:8] + "-" + ident.Hex(32, n.name, c.rt.ContainerID, c.rt.IfName)[:16]
		owned["a-"+tag], owned["g-"+tag] = c.rt.ContainerID, c.rt.ContainerID
		owned[c.hostVeth()] = c.rt.ContainerID
		owned[n.name+"/"+c.rt.ContainerID+"/eth0"] = c.rt.ContainerID
	}
	isLive := map[string]bool{}
	for _, c := range live {
		isLive[c.rt.ContainerID] = true
	}
	var objects []string
	objects = append(objects, f.host.AttachmentChains()...)
	for _, e := range f.host.PortElements() {
		objects = append(objects, e[strings.LastIndex(e, " ")+1:])
	}
	els, err := f.nftConn(t).GetSetElements(&nftables.Set{Table: inetNswire, Name: "dnat4any"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range els {
		objects = append(objects, e.Comment)
	}
	guards := 0
	for _, o := range objects {
		id, ok := owned[o]
		switch {
		case !ok:
			t.Errorf("%s belongs to no attachment of the test", o)
		case !isLive[id]:
			t.Errorf("%s of deleted attachment %s is back", o, id)
		case strings.HasPrefix(o, "g-"):
			guards++
		}
	}
	if guards != len(live) || len(els) != len(live) {
		t.Errorf("%d guard chains and %d published ports for %d live attachments", guards, len(els), len(live))
	}
}
