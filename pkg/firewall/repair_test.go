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
