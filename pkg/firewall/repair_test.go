package firewall

import (
	"testing"

	"github.com/google/nftables"
)

// TestRepairAfterFlush: `nft flush table` of either table is seen by the
// next Add's probes and repaired.
func TestRepairAfterFlush(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	c := tp.addContainer(b, 2)
	tp.add(c)
	serve(t, c.ns, 7002)
	probe := func() (*request, *request) {
		p, g := skeletonProbes()
		must(t, tp.fw.q.exchange(p, g), "probe")
		return p, g
	}
	p, g := probe()
	if p.chainUse() != portsUse || !skeletonIntact(p, g) {
		t.Fatalf("fresh tables: ports use %d (want %d), guard-pre %d rules", p.chainUse(), portsUse, len(g.msgs))
	}
	for _, tb := range []*nftables.Table{inetTable, brTable} {
		tp.fw.testConn(t).FlushTable(tb)
		must(t, tp.fw.testConn(t).Flush(), "flush")
		if skeletonIntact(probe()) {
			t.Fatalf("flushed table %d reported intact", tb.Family)
		}
		d := tp.addContainer(b, 3+int(tb.Family))
		tp.add(d)
		if !skeletonIntact(probe()) {
			t.Fatal("not repaired by the next Add")
		}
		must(t, tp.fw.Check(d.att), "check")
		tp.mustReach(d.ns, "tcp", hp(c.ip4, 7002), nil, d.ip4.String())
	}
}

// TestGuardPreRules keeps the probe's expected rule count in step with the
// rules guard-pre is made with.
func TestGuardPreRules(t *testing.T) {
	if n := len(guardBase(true)); n != guardPreRules {
		t.Fatalf("guardBase(true) has %d rules, guardPreRules is %d", n, guardPreRules)
	}
}

// TestReAddAfterRecordLost: an ADD repeated after someone flushed the
// attachment's a- chain replaces the elements the record no longer names
// (they are found by key and owner) instead of refusing them as held.
func TestReAddAfterRecordLost(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, PortMapping{HostPort: 8080, ContainerPort: 80})
	tp.add(x)
	nm := namesOf(x.att.Net.Name, x.att.ContainerID, x.att.IfName)
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
	nm := namesOf(x.att.Net.Name, x.att.ContainerID, x.att.IfName)
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
