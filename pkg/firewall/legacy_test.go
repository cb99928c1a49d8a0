package firewall

import (
	"net"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TestUpgradeFromGuardChains: a host whose tables were made by the layout
// before the guard sets (guard-pre holds one rule, a verdict map lookup,
// and each attachment's g- chain is jumped to by a map element) keeps its
// attachments protected after the first ADD of this layout rebuilds the
// base chains and moves them into the sets; CHECK then passes and DEL
// removes such an attachment completely.
func TestUpgradeFromGuardChains(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	old := tp.addContainer(b, 2)
	peer := tp.addContainer(b, 3)
	c := tp.fw.testConn(t)
	// The older layout declared its ifname sets without a key byte order.
	c.AddTable(brTable)
	must(t, c.AddSet(&nftables.Set{Table: brTable, Name: setNoICCBr, KeyType: nftables.TypeIFName}, nil), "old noicc set")
	must(t, c.Flush(), "old set")
	must(t, tp.fw.EnsureTables(), "tables")
	pre := &nftables.Chain{Table: brTable, Name: "guard-pre"}
	c.FlushChain(pre)
	c.AddRule(&nftables.Rule{Table: brTable, Chain: pre, Exprs: []expr.Any{meta(expr.MetaKeyIIFNAME, reg1), vmap(setGuard, reg1)}})
	queueLegacyGuard(t, c, old)
	must(t, c.Flush(), "legacy layout")

	serve(t, peer.ns, 80)
	ch := handleIn(t, old.ns)
	eth0, err := ch.LinkByName("eth0")
	must(t, err, "eth0")
	addAddr(t, ch, eth0, "10.1.0.99/24")
	spoof := net.ParseIP("10.1.0.99")
	tp.mustNotReach(old.ns, "tcp", hp(peer.ip4, 80), spoof)

	tp.add(peer) // rebuilds guard-pre: the old attachment stays guarded
	p, g := skeletonProbes()
	must(t, tp.fw.q.exchange(p, g), "probe")
	if !skeletonIntact(p, g) {
		t.Fatalf("guard-pre has %d rules after the upgrade, want %d", len(g.msgs), guardPreRules)
	}
	if n := tp.count(brTable, setGuard); n != 0 {
		t.Fatalf("legacy guard map holds %d elements after the upgrade", n)
	}
	tp.mustReach(old.ns, "tcp", hp(peer.ip4, 80), old.ip4, old.ip4.String())
	tp.mustNotReach(old.ns, "tcp", hp(peer.ip4, 80), spoof)
	must(t, tp.fw.Check(old.att), "Check moved attachment")

	must(t, tp.fw.Del(old.att), "Del legacy attachment")
	nm := namesOf(old.att.Net.Name, old.att.ContainerID, old.att.IfName)
	if got := tp.chains(nftables.TableFamilyBridge, guardPrefix); len(got) != 1 || got[0] == nm.guard {
		t.Fatalf("guard chains after Del %v, want only the peer's", got)
	}
	if n := tp.count(brTable, setGuard); n != 0 {
		t.Fatalf("legacy guard map holds %d elements after Del", n)
	}
	must(t, tp.fw.Check(peer.att), "Check peer")
}

// queueLegacyGuard writes x's anti-spoofing as the previous layout did: a
// g- chain of match-and-return rules, reached through the guard map.
func queueLegacyGuard(t *testing.T, c *nftables.Conn, x *ctr) {
	nm := namesOf(x.att.Net.Name, x.att.ContainerID, x.att.IfName)
	ch := &nftables.Chain{Table: brTable, Name: nm.guard}
	c.AddChain(ch)
	add := func(note string, exprs ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: brTable, Chain: ch, Exprs: cat(exprs...), UserData: comment(note)})
	}
	ret := []expr.Any{verdict(expr.VerdictReturn)}
	add("nswire guard "+x.hostIf+" "+nm.owner, []expr.Any{meta(expr.MetaKeyIIFNAME, reg1), cmp(expr.CmpOpEq, reg1, ifname(x.hostIf))})
	add("mac "+x.mac.String(), []expr.Any{ll(6, 6, reg1), cmp(expr.CmpOpNeq, reg1, x.mac), verdict(expr.VerdictDrop)})
	for _, ip := range []net.IP{x.ip4.To4(), net.IPv4zero.To4()} {
		add("arp "+ip.String(), etherType(unix.ETH_P_ARP), []expr.Any{nh(14, 4, reg1), cmp(expr.CmpOpEq, reg1, ip)}, ret)
	}
	add("ip "+x.ip4.String(), etherType(unix.ETH_P_IP), []expr.Any{saddr(4, reg1), cmp(expr.CmpOpEq, reg1, x.ip4.To4())}, ret)
	for _, ip := range []net.IP{x.ip6, net.IPv6unspecified, linkLocal(x.mac)} {
		add("ip "+ip.String(), etherType(unix.ETH_P_IPV6), []expr.Any{saddr(6, reg1), cmp(expr.CmpOpEq, reg1, ip.To16())}, ret)
	}
	add("drop", []expr.Any{verdict(expr.VerdictDrop)})
	must(t, c.SetAddElements(setDef(brTable, setGuard), []nftables.SetElement{{
		Key: ifname(x.hostIf), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: nm.guard}, Comment: nm.owner,
	}}), "legacy guard element")
}

// TestUpgradeFromVerdictPorts: published ports made by the layout before
// the DNAT data maps (the ports chain looks up verdict maps whose elements
// go to an a- chain holding the DNAT rules) keep working across the first
// ADD of this layout, which moves them into the data maps: CHECK passes,
// a conflicting ADD is refused, DEL removes everything.
func TestUpgradeFromVerdictPorts(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	old := tp.addContainer(b, 2, PortMapping{HostPort: 8080, ContainerPort: 80})
	peer := tp.addContainer(b, 3)
	tp.add(old)
	serve(t, old.ns, 80)
	c := tp.fw.testConn(t)
	ports := &nftables.Chain{Table: inetTable, Name: chainPorts}
	c.FlushChain(ports)
	for _, fam := range []int{4, 6} {
		for _, any := range []bool{false, true} {
			c.AddRule(&nftables.Rule{Table: inetTable, Chain: ports, Exprs: portsRule(fam, any, true)})
		}
	}
	nm := namesOf(old.att.Net.Name, old.att.ContainerID, old.att.IfName)
	att := &nftables.Chain{Table: inetTable, Name: nm.att}
	c.FlushChain(att)
	for _, k := range portKeys(old.att) {
		c.AddRule(&nftables.Rule{Table: inetTable, Chain: att, Exprs: legacyDNAT(k), UserData: comment(k.record())})
		must(t, c.SetDeleteElements(setDef(inetTable, k.set()), []nftables.SetElement{{Key: k.key()}}), "queue")
		must(t, c.SetAddElements(setDef(inetTable, legacyPortsSet(k.fam, k.any)), []nftables.SetElement{{
			Key: k.key(), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: nm.att}, Comment: nm.owner,
		}}), "queue")
	}
	must(t, c.Flush(), "legacy layout")
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())

	tp.add(peer) // rebuilds the ports chain and moves the old elements
	for _, set := range []string{"ports4any", "ports6any"} {
		if n := tp.count(inetTable, set); n != 0 {
			t.Fatalf("legacy map %s holds %d elements after the upgrade", set, n)
		}
	}
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())
	tp.mustReach(tp.up, "tcp", hp(hostUp6, 8080), nil, up6.String())
	must(t, tp.fw.Check(old.att), "Check moved attachment")
	peer.att.Ports = []PortMapping{{HostPort: 8080, ContainerPort: 80}}
	wantCode(t, tp.fw.Add(peer.att), ErrPortConflict, nm.owner)

	must(t, tp.fw.Del(old.att), "Del moved attachment")
	if n := tp.count(inetTable, "dnat4any") + tp.count(inetTable, "dnat6any"); n != 0 {
		t.Fatalf("%d port elements left after Del", n)
	}
	if got := tp.chains(nftables.TableFamilyINet, attPrefix); len(got) != 0 {
		t.Fatalf("a- chains left: %v", got)
	}
}

// legacyDNAT is a DNAT rule of the layout before the data maps.
func legacyDNAT(k portKey) []expr.Any {
	natFam := uint32(unix.NFPROTO_IPV4)
	if k.fam == 6 {
		natFam = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: ipBytes(k.ctrIP, k.fam)},
		&expr.Immediate{Register: 2, Data: be16(k.ctrPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFam, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}
