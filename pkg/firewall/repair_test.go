package firewall

import (
	"errors"
	"net"
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

// TestRepairAfterSkeletonLoss: a chain of the layout emptied (`nft flush
// chain inet nswire forward`), deleted, or short of one rule makes its
// table not current: Check reports it, the next Add rebuilds the table,
// and the attachments added again work as before.
func TestRepairAfterSkeletonLoss(t *testing.T) {
	tp := newTopo(t)
	b1, b2 := tp.addBridge(1, nil), tp.addBridge(2, nil)
	a := tp.addContainer(b1, 2)
	z := tp.addContainer(b2, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(a)
	tp.add(z)
	serve(t, a.ns, 80)
	serve(t, z.ns, 80)
	working := func() {
		t.Helper()
		tp.mustNotReach(a.ns, "tcp", hp(z.ip4, 80), nil) // isolation
		tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())
	}
	working()
	chain := func(tb *nftables.Table, name string) *nftables.Chain {
		return &nftables.Chain{Table: tb, Name: name}
	}
	for _, loss := range []struct {
		name  string
		chain string // named by Check
		do    func(c *nftables.Conn)
		check func() // the loss is real
	}{
		{"flush chain inet nswire forward", "forward",
			func(c *nftables.Conn) { c.FlushChain(chain(inetTable, "forward")) },
			func() { tp.mustReach(a.ns, "tcp", hp(z.ip4, 80), nil, "") }}, // masqueraded
		{"delete chain inet nswire nat-pre", "nat-pre",
			func(c *nftables.Conn) {
				c.FlushChain(chain(inetTable, "nat-pre"))
				c.DelChain(chain(inetTable, "nat-pre"))
			},
			func() { tp.mustNotReach(tp.up, "tcp", hp(hostUp4, 8080), nil) }},
		{"flush chain bridge nswire guard-pre", "guard-pre",
			func(c *nftables.Conn) { c.FlushChain(chain(brTable, "guard-pre")) }, nil},
		{"delete one rule of chain inet nswire nat-post", "nat-post",
			func(c *nftables.Conn) {
				rules, err := c.GetRules(inetTable, chain(inetTable, "nat-post"))
				must(t, err, "rules of nat-post")
				must(t, c.DelRule(rules[len(rules)-1]), "delete a rule")
			}, nil},
	} {
		c := tp.fw.testConn(t)
		loss.do(c)
		must(t, c.Flush(), "%s", loss.name)
		if tp.stampsCurrent() {
			t.Fatalf("%s: table reported current", loss.name)
		}
		if loss.check != nil {
			loss.check()
		}
		var m *Mismatch
		if err := tp.fw.Check(a.att); !errors.As(err, &m) || !strings.Contains(err.Error(), loss.chain) {
			t.Fatalf("%s: Check = %v, want a mismatch naming chain %s", loss.name, err, loss.chain)
		}
		if err := tp.fw.CheckTables(); !errors.As(err, &m) || !strings.Contains(err.Error(), loss.chain) {
			t.Fatalf("%s: CheckTables = %v, want a mismatch naming chain %s", loss.name, err, loss.chain)
		}
		tp.add(a) // rebuilds the table
		if !tp.stampsCurrent() {
			t.Fatalf("%s: not rebuilt by the next Add", loss.name)
		}
		tp.add(z) // its elements of the rebuilt table come back
		for _, x := range []*ctr{a, z} {
			must(t, tp.fw.Check(x.att), "%s: Check after the rebuild", loss.name)
			must(t, tp.fw.CheckNetwork(x.att.Net), "%s: CheckNetwork after the rebuild", loss.name)
		}
		must(t, tp.fw.CheckTables(), "%s: CheckTables after the rebuild", loss.name)
		working()
	}
}

// TestCheckNetwork: a network-level element deleted (or one the network
// does not want, added) is reported by CheckNetwork, naming its set, and
// the next Add puts it back (or takes it away).
func TestCheckNetwork(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, func(n *Network) {
		n.ICC = false
		_, d, _ := net.ParseCIDR("198.51.100.0/24")
		n.NoMasquerade = []*net.IPNet{d}
	})
	x := tp.addContainer(b, 2)
	y := tp.addContainer(b, 3)
	tp.add(x)
	tp.add(y)
	serve(t, tp.up, 7000)
	serve(t, y.ns, 80)
	must(t, tp.fw.CheckNetwork(b.Network), "CheckNetwork of an intact network")
	// An unknown network's elements are all missing.
	if err := tp.fw.CheckNetwork(tp.addBridge(2, nil).Network); !errors.As(err, new(*Mismatch)) {
		t.Fatalf("CheckNetwork of a network never added = %v, want a mismatch", err)
	}
	elems := func(n Network, set string) []nftables.SetElement {
		for _, a := range networkAsserts(n, false) {
			if a.set == set {
				var out []nftables.SetElement
				for _, e := range a.els {
					out = append(out, nftables.SetElement{Key: e.key, KeyEnd: e.keyEnd, IntervalEnd: e.intervalEnd})
				}
				return out
			}
		}
		t.Fatalf("network has no elements in %s", set)
		return nil
	}
	noIso := b.Network
	noIso.Isolation = false
	for _, loss := range []struct {
		set    string
		del    bool    // deleted, else added
		n      Network // the network as its last ADD had it
		broken func()  // the loss is real
		works  func()  // and repaired
	}{
		{set: "masq4", del: true, n: b.Network,
			broken: func() { tp.mustNotReach(x.ns, "tcp", hp(up4, 7000), nil) },
			works:  func() { tp.mustReach(x.ns, "tcp", hp(up4, 7000), nil, hostUp4.String()) }},
		{set: "noicc6", del: true, n: b.Network},
		{set: "intra4", del: true, n: b.Network},
		{set: "nomasq4", del: true, n: b.Network},
		{set: "nets6", del: true, n: b.Network},
		{set: "iso4", del: false, n: noIso},
	} {
		n := loss.n
		if !loss.del {
			// The last ADD turned isolation off: iso4 must not hold the subnet.
			tp.add(&ctr{att: withNet(x.att, n)})
			must(t, tp.fw.CheckNetwork(n), "CheckNetwork after the flags changed")
		}
		c := tp.fw.testConn(t)
		s := setDef(inetTable, loss.set)
		if loss.del {
			must(t, c.SetDeleteElements(s, elems(n, loss.set)), "delete from %s", loss.set)
		} else {
			must(t, c.SetAddElements(s, elems(b.Network, loss.set)), "add to %s", loss.set)
		}
		must(t, c.Flush(), "damage %s", loss.set)
		if loss.broken != nil {
			loss.broken()
		}
		err := tp.fw.CheckNetwork(n)
		var m *Mismatch
		want := map[bool]string{true: "missing", false: "unexpected"}[loss.del]
		if !errors.As(err, &m) || !strings.Contains(err.Error(), "set inet nswire "+loss.set+" is "+want) {
			t.Fatalf("%s damaged: CheckNetwork = %v, want a mismatch naming the set", loss.set, err)
		}
		t.Logf("%s damaged: %v", loss.set, err)
		must(t, tp.fw.Check(x.att), "Check of %s (the network-level elements are CheckNetwork's)", x.att.ContainerID)
		tp.add(&ctr{att: withNet(y.att, n)})
		must(t, tp.fw.CheckNetwork(n), "CheckNetwork after the next Add (%s)", loss.set)
		if loss.works != nil {
			loss.works()
		}
	}
	tp.mustNotReach(x.ns, "tcp", hp(y.ip4, 80), nil) // icc=false
}

// withNet is a copy of a as an ADD with network settings n makes it.
func withNet(a *Attachment, n Network) *Attachment {
	c := *a
	c.Net = n
	return &c
}
