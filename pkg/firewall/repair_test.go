package firewall

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// stampsCurrent asks the kernel whether both tables carry this layout.
func (tp *topo) stampsCurrent() bool {
	tp.t.Helper()
	probes := stampProbes()
	must(tp.t, tp.fw.q.exchange(stampRequests(probes)...), "probe")
	return allCurrent(probes)
}

// TestRepairAfterFlush: `nft flush table` of either table removes its
// stamp, and the next Add rebuilds that table.
func TestRepairAfterFlush(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	c := tp.addContainer(b, 2)
	tp.add(c)
	serve(t, c.ns, 7002)
	if !tp.stampsCurrent() {
		t.Fatal("fresh tables do not carry the stamp")
	}
	for _, tb := range []*nftables.Table{inetTable, brTable} {
		tp.fw.testConn(t).FlushTable(tb)
		must(t, tp.fw.testConn(t).Flush(), "flush")
		if tp.stampsCurrent() {
			t.Fatalf("flushed table %d reported current", tb.Family)
		}
		// Sets and chains survive a flush, the rules do not: CHECK says so.
		var m *Mismatch
		if err := tp.fw.Check(c.att); !errors.As(err, &m) || !strings.Contains(err.Error(), "flushed") {
			t.Fatalf("Check after flushing table %d = %v, want a mismatch naming the flush", tb.Family, err)
		}
		d := tp.addContainer(b, 3+int(tb.Family))
		tp.add(d)
		if !tp.stampsCurrent() {
			t.Fatal("not rebuilt by the next Add")
		}
		must(t, tp.fw.Check(d.att), "check")
		tp.mustReach(d.ns, "tcp", hp(c.ip4, 7002), nil, d.ip4.String())
	}
}

// TestRebuildOtherLayout: a table stamped by another layout version is
// deleted and recreated by the next Add (an element it held is gone), and
// neither another table of the same name in another family nor another
// table of the same family is touched. DEL, CHECK and GC create nothing.
func TestRebuildOtherLayout(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(x)
	c := tp.fw.testConn(t)
	other := &nftables.Table{Name: "other", Family: nftables.TableFamilyINet}
	ipTable := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	for _, tb := range []*nftables.Table{other, ipTable} {
		c.AddTable(tb)
		c.AddChain(&nftables.Chain{Table: tb, Name: "keep"})
	}
	// What a binary of another layout would have left: its stamp instead of ours.
	old := c.AddChain(&nftables.Chain{Table: inetTable, Name: "layout-0"})
	c.AddRule(&nftables.Rule{Table: inetTable, Chain: old, UserData: comment("nswire layout 0")})
	c.FlushChain(&nftables.Chain{Table: inetTable, Name: stampChain})
	c.DelChain(&nftables.Chain{Table: inetTable, Name: stampChain})
	must(t, c.Flush(), "other layout")
	if tp.stampsCurrent() {
		t.Fatal("a table of another layout reported current")
	}

	y := tp.addContainer(b, 3)
	tp.add(y)
	if !tp.stampsCurrent() {
		t.Fatal("not rebuilt by the next Add")
	}
	if got := tp.chains(nftables.TableFamilyINet, "layout-"); len(got) != 1 || got[0] != stampChain {
		t.Fatalf("stamp chains after the rebuild: %v", got)
	}
	if n := tp.count(inetTable, "dnat4any"); n != 0 {
		t.Fatalf("dnat4any holds %d elements after the rebuild, want 0", n)
	}
	for _, tb := range []*nftables.Table{other, ipTable} {
		if _, err := c.ListChain(tb, "keep"); err != nil {
			t.Fatalf("table %s (family %d) touched by the rebuild: %v", tb.Name, tb.Family, err)
		}
	}
	must(t, tp.fw.Check(y.att), "Check after the rebuild")
	tp.add(x) // its next ADD brings x's elements back
	must(t, tp.fw.Check(x.att), "Check of the re-added attachment")
}

// TestReAddAfterRecordLost: an ADD repeated after someone flushed the
// attachment's a- chain replaces the elements the record no longer names
// (they are found by key and owner) instead of refusing them as held.
func TestReAddAfterRecordLost(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(x)
	nm := namesOf(x.att.ID())
	tp.fw.testConn(t).FlushChain(&nftables.Chain{Table: inetTable, Name: nm.att})
	must(t, tp.fw.testConn(t).Flush(), "flush record")
	if err := tp.fw.Check(x.att); err == nil {
		t.Fatal("Check passed with the record flushed")
	}
	must(t, tp.fw.Add(x.att), "repeated Add")
	must(t, tp.fw.Check(x.att), "Check after the repeated Add")
	if n := tp.count(inetTable, "dnat4any"); n != 1 {
		t.Fatalf("dnat4any has %d elements, want 1", n)
	}
}

// TestDelAfterGuardRecordLost: DEL of an attachment whose g- chain someone
// flushed finds its guard elements by the host veth name it is given.
func TestDelAfterGuardRecordLost(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, func(n *Network) { n.ICC = false })
	x := tp.addContainer(b, 2)
	y := tp.addContainer(b, 3)
	tp.add(x)
	tp.add(y)
	nm := namesOf(x.att.ID())
	tp.fw.testConn(t).FlushChain(&nftables.Chain{Table: brTable, Name: nm.guard})
	must(t, tp.fw.testConn(t).Flush(), "flush record")
	must(t, tp.fw.Del(x.att), "Del")
	for set, want := range map[string]int{setGuarded: 1, setGMAC: 1, setGIP4: 1, setGIP6: 2, setNoICCBr: 1} {
		if n := tp.count(brTable, set); n != want {
			t.Fatalf("after Del set %s has %d elements, want %d (the other attachment's)", set, n, want)
		}
	}
	must(t, tp.fw.Check(y.att), "the other attachment is intact")
}
