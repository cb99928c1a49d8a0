package firewall

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

func (tp *topo) add(c *ctr) {
	tp.t.Helper()
	must(tp.t, tp.fw.Add(c.att), "Add %s", c.att.ContainerID)
}

// count returns the number of elements of a set in the host netns.
func (tp *topo) count(t *nftables.Table, set string) int {
	tp.t.Helper()
	els, err := tp.fw.testConn(tp.t).GetSetElements(setDef(t, set))
	must(tp.t, err, "list %s", set)
	return len(els)
}

// chains returns the names of nswire's chains of a family with a prefix.
func (tp *topo) chains(fam nftables.TableFamily, prefix string) []string {
	tp.t.Helper()
	cs, err := tp.fw.testConn(tp.t).ListChainsOfTableFamily(fam)
	must(tp.t, err, "list chains")
	var out []string
	for _, c := range cs {
		if c.Table.Name == TableName && strings.HasPrefix(c.Name, prefix) {
			out = append(out, c.Name)
		}
	}
	return out
}

func wantCode(t *testing.T, err error, code uint, contains string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want *types.Error code %d", err, err, code)
	}
	if e.Code != code || !strings.Contains(e.Msg, contains) {
		t.Fatalf("got code %d %q, want code %d containing %q", e.Code, e.Msg, code, contains)
	}
}

// TestValidatePorts: Add refuses ports the firewall cannot publish (the
// capability's wire form is checked by pkg/config).
func TestValidatePorts(t *testing.T) {
	for _, tc := range []struct {
		p    Port
		want string
	}{
		{Port{Proto: "tcp", HostPort: 0, ContainerPort: 80}, "portMappings[0].hostPort 0"},
		{Port{Proto: "tcp", HostPort: 80, ContainerPort: 0}, "portMappings[0].containerPort 0"},
		{Port{Proto: "icmp", HostPort: 80, ContainerPort: 80}, `portMappings[0].protocol "icmp"`},
		{Port{Proto: "TCP", HostPort: 80, ContainerPort: 80}, `portMappings[0].protocol "TCP"`},
		{Port{Proto: "tcp", HostAddr: netip.MustParseAddr("224.0.0.1"), HostPort: 80, ContainerPort: 80}, `portMappings[0].hostIP "224.0.0.1"`},
	} {
		wantCode(t, validatePorts([]Port{tc.p}), types.ErrInvalidNetworkConfig, tc.want)
	}
	ok := []Port{{Proto: "tcp", HostPort: 80, ContainerPort: 80}, {Proto: "udp", HostPort: 80, ContainerPort: 80},
		{Proto: "sctp", HostAddr: netip.MustParseAddr("::1"), HostPort: 81, ContainerPort: 80},
		{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 82, ContainerPort: 80}}
	if err := validatePorts(ok); err != nil {
		t.Fatal(err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, k := range []portKey{
		{fam: 4, wildcard: true, proto: "tcp", hostPort: 8080, ctrIP: net.ParseIP("10.1.0.2").To4(), ctrPort: 80},
		{fam: 6, wildcard: false, hostIP: net.ParseIP("2001:db8::1"), proto: "sctp", hostPort: 1, ctrIP: net.ParseIP("fd00::2"), ctrPort: 65535},
	} {
		got, ok := parseRecord(k.record())
		if !ok || got.record() != k.record() || string(got.key()) != string(k.key()) || got.set() != k.set() {
			t.Fatalf("round trip of %q: %+v %v", k.record(), got, ok)
		}
	}
}

func TestMasquerade(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	c := tp.addContainer(b, 2)
	tp.add(c)
	serve(t, tp.up, 7000)
	tp.mustReach(c.ns, "tcp", hp(up4, 7000), nil, hostUp4.String())
	tp.mustReach(c.ns, "udp", hp(up4, 7000), nil, hostUp4.String())
	tp.mustReach(c.ns, "tcp", hp(up6, 7000), nil, hostUp6.String())
	// Inside the subnet: not masqueraded.
	d := tp.addContainer(b, 3)
	tp.add(d)
	serve(t, d.ns, 7001)
	tp.mustReach(c.ns, "tcp", hp(d.ip4, 7001), nil, c.ip4.String())
	tp.mustReach(c.ns, "tcp", hp(d.ip6, 7001), nil, c.ip6.String())
	// ipMasq off: the upstream sees the container address (it has no route
	// back, so the connection fails: only reachability through NAT counts).
	b2 := tp.addBridge(2, func(n *Network) { n.IPMasq = false })
	e := tp.addContainer(b2, 2)
	tp.add(e)
	tp.mustNotReach(e.ns, "tcp", hp(up4, 7000), nil)
}

func TestPublishedPorts(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	web := tp.addContainer(b, 2,
		Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80},
		Port{Proto: "udp", HostPort: 5353, ContainerPort: 80},
		Port{Proto: "tcp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 9090, ContainerPort: 80},
		Port{Proto: "tcp", HostAddr: addrOf(hostUp4), HostPort: 9091, ContainerPort: 80},
		Port{Proto: "sctp", HostPort: 9092, ContainerPort: 80},
	)
	other := tp.addContainer(b, 3)
	tp.add(web)
	tp.add(other)
	serve(t, web.ns, 80)

	t.Run("from upstream", func(t *testing.T) {
		tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())
		tp.mustReach(tp.up, "udp", hp(hostUp4, 5353), nil, up4.String())
		tp.mustReach(tp.up, "tcp", hp(hostUp6, 8080), nil, up6.String())
		tp.mustReach(tp.up, "tcp", hp(hostUp4, 9091), nil, up4.String())
	})
	t.Run("127.0.0.1-only port not from upstream", func(t *testing.T) {
		tp.mustNotReach(tp.up, "tcp", hp(hostUp4, 9090), nil)
	})
	t.Run("from host", func(t *testing.T) {
		tp.mustReach(tp.host, "tcp", hp(hostUp4, 8080), nil, hostUp4.String())
		tp.mustReach(tp.host, "tcp", hp(b.gw4, 8080), nil, b.gw4.String())
		tp.mustReach(tp.host, "tcp", hp(hostUp6, 8080), nil, hostUp6.String())
		tp.mustReach(tp.host, "udp", hp(hostUp4, 5353), nil, "")
	})
	t.Run("from localhost", func(t *testing.T) {
		tp.mustReach(tp.host, "tcp", "127.0.0.1:8080", nil, b.gw4.String())
		tp.mustReach(tp.host, "tcp", "127.0.0.1:9090", nil, b.gw4.String())
	})
	t.Run("hairpin from another container", func(t *testing.T) {
		tp.mustReach(other.ns, "tcp", hp(hostUp4, 8080), nil, b.gw4.String())
		tp.mustReach(other.ns, "tcp", hp(b.gw4, 8080), nil, b.gw4.String())
		tp.mustReach(other.ns, "tcp", hp(hostUp6, 8080), nil, b.gw6.String())
	})
	t.Run("hairpin to own port", func(t *testing.T) {
		tp.mustReach(web.ns, "tcp", hp(hostUp4, 8080), nil, b.gw4.String())
		tp.mustReach(web.ns, "udp", hp(hostUp4, 5353), nil, b.gw4.String())
	})
	t.Run("only traffic for the host is captured", func(t *testing.T) {
		// 8080 towards a non-local address (the upstream) is not translated.
		tp.mustNotReach(other.ns, "tcp", hp(up4, 8080), nil)
	})
	t.Run("del unpublishes", func(t *testing.T) {
		must(t, tp.fw.Del(web.att), "Del")
		tp.mustNotReach(tp.up, "tcp", hp(hostUp4, 8080), nil)
	})
}

func TestLocalhostProtection(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	c := tp.addContainer(b, 2, Port{Proto: "tcp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 9090, ContainerPort: 80})
	tp.add(c)
	serve(t, tp.host, 6000) // a host service on every address, 127.0.0.1 included
	// Make the container send 127.0.0.0/8 to its gateway (an attacker on the
	// bridge would do this), with route_localnet on the bridge as published
	// localhost ports need.
	ch := handleIn(t, c.ns)
	sysctl(t, c.ns, "net.ipv4.conf.eth0.route_localnet", "1", "net.ipv4.conf.all.route_localnet", "1", "net.ipv4.conf.all.log_martians", "1")
	sysctl(t, tp.host, "net.ipv4.conf.all.log_martians", "1")
	eth0, err := ch.LinkByName("eth0")
	must(t, err, "eth0")
	for _, cidr := range []string{"127.0.0.0/8", "127.0.0.1/32"} {
		_, lo, _ := net.ParseCIDR(cidr)
		must(t, ch.RouteDel(&netlink.Route{Dst: lo, Table: 255, Type: 2 /* local */, Scope: netlink.SCOPE_HOST,
			LinkIndex: 1}), "del local %s", cidr)
	}
	_, dst, _ := net.ParseCIDR("127.0.0.0/8")
	must(t, ch.RouteAdd(&netlink.Route{Dst: dst, Gw: b.gw4, LinkIndex: eth0.Attrs().Index}), "route 127/8 via gw")
	tp.mustReach(c.ns, "tcp", hp(b.gw4, 6000), nil, c.ip4.String()) // the host service answers
	tp.mustNotReach(c.ns, "tcp", "127.0.0.1:9090", nil)

	// What reaches the host matters, not whether replies get back (the
	// container drops replies from 127.0.0.1 as martians): count datagrams
	// that a host socket on 127.0.0.1 receives.
	var pc net.PacketConn
	must(t, tp.host.Do(func(ns.NetNS) (err error) { pc, err = net.ListenPacket("udp", "127.0.0.1:6001"); return }), "listen")
	defer pc.Close()
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 16)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	send := func(msg string) {
		must(t, c.ns.Do(func(ns.NetNS) error {
			u, err := net.Dial("udp", "127.0.0.1:6001")
			if err != nil {
				return err
			}
			defer u.Close()
			_, err = u.Write([]byte(msg))
			return err
		}), "send")
	}
	received := func(msg string) bool {
		send(msg)
		for {
			select {
			case m := <-got:
				if m == msg {
					return true
				}
			case <-time.After(500 * time.Millisecond):
				return false
			}
		}
	}
	if received("with-rule") {
		t.Fatal("a packet to 127.0.0.1 from the bridge reached the host")
	}
	// Control: without nswire's 127/8 rule it does (route_localnet is on),
	// so the assertion above means something.
	raw := &nftables.Chain{Table: inetTable, Name: "raw-pre"}
	rules, err := tp.fw.testConn(t).GetRules(inetTable, raw)
	must(t, err, "rules")
	must(t, tp.fw.testConn(t).DelRule(&nftables.Rule{Table: inetTable, Chain: raw, Handle: rules[0].Handle}), "queue")
	must(t, tp.fw.testConn(t).Flush(), "delete 127/8 rule")
	if !received("without-rule") {
		t.Fatal("control: packet to 127.0.0.1 did not reach the host even without the rule")
	}
	// A rebuild restores it: delete the table, the next Add remakes it.
	tp.fw.testConn(t).DelTable(inetTable)
	must(t, tp.fw.testConn(t).Flush(), "delete table")
	tp.add(c)
	if received("restored") {
		t.Fatal("a packet to 127.0.0.1 reached the host after the rebuild")
	}
}

func TestIsolation(t *testing.T) {
	tp := newTopo(t)
	b1 := tp.addBridge(1, nil)
	b2 := tp.addBridge(2, nil)
	a := tp.addContainer(b1, 2)
	z := tp.addContainer(b2, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(a)
	tp.add(z)
	serve(t, z.ns, 80)
	serve(t, a.ns, 80)
	tp.mustNotReach(a.ns, "tcp", hp(z.ip4, 80), nil)
	tp.mustNotReach(a.ns, "tcp", hp(z.ip6, 80), nil)
	tp.mustNotReach(z.ns, "tcp", hp(a.ip4, 80), nil)
	// Published ports stay reachable across networks (masqueraded: the
	// traffic leaves a's subnets).
	tp.mustReach(a.ns, "tcp", hp(hostUp4, 8080), nil, b2.gw4.String())
	tp.mustReach(a.ns, "tcp", hp(b2.gw4, 8080), nil, b2.gw4.String())

	t.Run("isolation off", func(t *testing.T) {
		b3 := tp.addBridge(3, func(n *Network) { n.Isolation = false })
		b4 := tp.addBridge(4, func(n *Network) { n.Isolation = false })
		p := tp.addContainer(b3, 2)
		q := tp.addContainer(b4, 2)
		tp.add(p)
		tp.add(q)
		serve(t, q.ns, 80)
		tp.mustReach(p.ns, "tcp", hp(q.ip4, 80), nil, "")
		// An isolated network stays unreachable from a non-isolated one.
		tp.mustNotReach(p.ns, "tcp", hp(a.ip4, 80), nil)
	})
}

func TestICCFalse(t *testing.T) {
	for _, brnf := range []string{"1", "0"} {
		t.Run("bridge-nf-call="+brnf, func(t *testing.T) {
			tp := newTopo(t)
			sysctl(t, tp.host, "net.bridge.bridge-nf-call-iptables", brnf, "net.bridge.bridge-nf-call-ip6tables", brnf)
			b := tp.addBridge(1, func(n *Network) { n.ICC = false })
			x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
			y := tp.addContainer(b, 3)
			tp.add(x)
			tp.add(y)
			serve(t, x.ns, 80)
			serve(t, tp.host, 6000)
			tp.mustNotReach(y.ns, "tcp", hp(x.ip4, 80), nil)
			tp.mustNotReach(y.ns, "tcp", hp(x.ip6, 80), nil)
			tp.mustReach(y.ns, "tcp", hp(b.gw4, 6000), nil, y.ip4.String())
			tp.mustReach(y.ns, "tcp", hp(hostUp4, 8080), nil, b.gw4.String())
			tp.mustReach(x.ns, "tcp", hp(hostUp4, 8080), nil, b.gw4.String())
			// icc is applied per attachment: re-adding both turns it on.
			x.att.Net.ICC, y.att.Net.ICC = true, true
			tp.add(x)
			tp.add(y)
			tp.mustReach(y.ns, "tcp", hp(x.ip4, 80), nil, y.ip4.String())
		})
	}
}

func TestInternal(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, func(n *Network) { n.Internal = true })
	c := tp.addContainer(b, 2)
	d := tp.addContainer(b, 3)
	tp.add(c)
	tp.add(d)
	serve(t, tp.up, 7000)
	serve(t, d.ns, 80)
	tp.mustNotReach(c.ns, "tcp", hp(up4, 7000), nil)
	tp.mustNotReach(c.ns, "tcp", hp(up6, 7000), nil)
	tp.mustNotReach(tp.up, "tcp", hp(d.ip4, 80), nil)
	tp.mustReach(c.ns, "tcp", hp(d.ip4, 80), nil, c.ip4.String())
	c.att.Ports = []Port{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}}
	wantCode(t, tp.fw.Add(c.att), types.ErrInvalidNetworkConfig, "internal")
}

func TestAntiSpoofing(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	c := tp.addContainer(b, 2)
	d := tp.addContainer(b, 3)
	tp.add(c)
	tp.add(d)
	serve(t, tp.up, 7000)
	serve(t, d.ns, 80)
	ch := handleIn(t, c.ns)
	eth0, err := ch.LinkByName("eth0")
	must(t, err, "eth0")
	addAddr(t, ch, eth0, "10.1.0.99/24")
	addAddr(t, ch, eth0, "fd00:1::99/64")
	spoof4, spoof6 := net.ParseIP("10.1.0.99"), net.ParseIP("fd00:1::99")
	tp.mustReach(c.ns, "tcp", hp(up4, 7000), c.ip4, hostUp4.String())
	tp.mustNotReach(c.ns, "tcp", hp(up4, 7000), spoof4)
	tp.mustNotReach(c.ns, "udp", hp(up4, 7000), spoof4)
	tp.mustNotReach(c.ns, "tcp", hp(d.ip4, 80), spoof4) // bridged, same L2
	tp.mustReach(c.ns, "tcp", hp(d.ip6, 80), c.ip6, c.ip6.String())
	tp.mustNotReach(c.ns, "tcp", hp(d.ip6, 80), spoof6)
	tp.mustNotReach(c.ns, "tcp", hp(up6, 7000), spoof6)

	t.Run("foreign MAC", func(t *testing.T) {
		// Move the container to a MAC it was not given: everything stops.
		must(t, ch.LinkSetHardwareAddr(eth0, net.HardwareAddr{0x02, 0, 0, 0, 0x99, 0x99}), "set mac")
		_ = ch.NeighDel(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: b.gw4}) // may not exist
		tp.mustNotReach(c.ns, "tcp", hp(up4, 7000), c.ip4)
	})
}

func TestDelRemovesExactlyOneAttachment(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80}, Port{Proto: "udp", HostPort: 53, ContainerPort: 53})
	y := tp.addContainer(b, 3, Port{Proto: "tcp", HostPort: 8081, ContainerPort: 80})
	tp.add(x)
	tp.add(y)
	if n := tp.count(inetTable, "dnat4any"); n != 3 {
		t.Fatalf("dnat4any has %d elements, want 3", n)
	}
	if n := tp.count(inetTable, "dnat6any"); n != 3 {
		t.Fatalf("dnat6any has %d elements, want 3", n)
	}
	if n := tp.count(brTable, setGuarded); n != 2 {
		t.Fatalf("bridge guard has %d elements, want 2", n)
	}
	must(t, tp.fw.Del(x.att), "Del x")
	if n := tp.count(inetTable, "dnat4any"); n != 1 {
		t.Fatalf("after Del: dnat4any has %d elements, want 1", n)
	}
	if n := tp.count(brTable, setGuarded); n != 1 {
		t.Fatalf("after Del: guard has %d elements, want 1", n)
	}
	nx, ny := namesOf(x.att.ID()), namesOf(y.att.ID())
	if got := tp.chains(nftables.TableFamilyINet, attPrefix); len(got) != 1 || got[0] != ny.att {
		t.Fatalf("inet attachment chains %v, want [%s]", got, ny.att)
	}
	if got := tp.chains(nftables.TableFamilyBridge, guardPrefix); len(got) != 1 || got[0] != ny.guard {
		t.Fatalf("bridge guard chains %v, want [%s] (x was %s)", got, ny.guard, nx.guard)
	}
	must(t, tp.fw.Check(y.att), "Check y after Del x")
	serve(t, y.ns, 80)
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8081), nil, up4.String())
}

func TestDelWithIdentityOnly(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(x)
	// The netns is gone, there is no prevResult: only the identity is known.
	id := &Attachment{Net: Network{Name: x.att.Net.Name}, ContainerID: x.att.ContainerID, IfName: "eth0"}
	must(t, tp.fw.Del(id), "Del")
	must(t, tp.fw.Del(id), "Del again")
	n := tp.count(inetTable, "dnat4any") + tp.count(inetTable, "dnat6any")
	for _, set := range append(guardSets, setNoICCBr) {
		n += tp.count(brTable, set)
	}
	if n != 0 {
		t.Fatalf("%d elements left", n)
	}
	if c := append(tp.chains(nftables.TableFamilyINet, attPrefix), tp.chains(nftables.TableFamilyBridge, guardPrefix)...); len(c) != 0 {
		t.Fatalf("chains left: %v", c)
	}
	if err := tp.fw.Check(x.att); err == nil {
		t.Fatal("Check passed after Del")
	}
}

func TestDelOnEmptyHost(t *testing.T) {
	needRoot(t)
	host := newNS(t)
	fw, err := New(Options{NetNSFd: int(host.Fd())})
	must(t, err, "New")
	defer fw.Close()
	a := &Attachment{Net: Network{Name: "n"}, ContainerID: "c", IfName: "eth0"}
	must(t, fw.Del(a), "Del")
	must(t, fw.GC(Network{Name: "n"}, nil), "GC")
	a.HostIf, a.IPs = "fake0", []*net.IPNet{{IP: net.IPv4(10, 0, 0, 2), Mask: net.CIDRMask(24, 32)}}
	if err := fw.Check(a); err == nil {
		t.Fatal("Check passed on an empty host")
	}
	tables, err := fw.testConn(t).ListTables()
	must(t, err, "list tables")
	if len(tables) != 0 {
		t.Fatalf("Del, GC or Check created tables: %v", tables)
	}
}

func TestCheck(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(x)
	must(t, tp.fw.Check(x.att), "Check")

	// Delete one element behind nswire's back.
	k := portKeys(x.att)[0]
	must(t, tp.fw.testConn(t).SetDeleteElements(setDef(inetTable, k.set()), []nftables.SetElement{{Key: k.key()}}), "queue")
	must(t, tp.fw.testConn(t).Flush(), "delete element")
	err := tp.fw.Check(x.att)
	if err == nil || !strings.Contains(err.Error(), "0.0.0.0:8080/tcp") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Check = %v, want missing hostPort 0.0.0.0:8080/tcp", err)
	}
	// A different port list is reported too.
	must(t, tp.fw.Add(x.att), "re-Add repairs")
	must(t, tp.fw.Check(x.att), "Check after repair")
	changed := *x.att
	changed.Ports = []Port{{Proto: "tcp", HostPort: 8081, ContainerPort: 80}}
	if err := tp.fw.Check(&changed); err == nil || !strings.Contains(err.Error(), "8081") {
		t.Fatalf("Check with other ports = %v", err)
	}
	// Anti-spoofing elements: each one missing is reported by name.
	for _, e := range []element{{set: setGIP4, key: concat(ifname(x.hostIf), x.ip4.To4())}, {set: setGuarded, key: ifname(x.hostIf)}} {
		must(t, tp.fw.testConn(t).SetDeleteElements(setDef(brTable, e.set), []nftables.SetElement{{Key: e.key}}), "queue")
		must(t, tp.fw.testConn(t).Flush(), "delete guard element")
		want := "element " + keyString(e) + " of set bridge nswire " + e.set + " is missing"
		if err := tp.fw.Check(x.att); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Check = %v, want %q", err, want)
		}
	}
	must(t, tp.fw.Del(x.att), "Del after tampering")
	if c := tp.chains(nftables.TableFamilyBridge, guardPrefix); len(c) != 0 {
		t.Fatalf("chains left: %v", c)
	}
}

func TestGC(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	other := tp.addBridge(2, nil)
	var cs []*ctr
	for i := 2; i < 6; i++ {
		c := tp.addContainer(b, i, Port{Proto: "tcp", HostPort: uint16(8000 + i), ContainerPort: 80})
		tp.add(c)
		cs = append(cs, c)
	}
	o := tp.addContainer(other, 2, Port{Proto: "tcp", HostPort: 9000, ContainerPort: 80})
	tp.add(o)
	// cs[0]'s record chain is gone (deleted behind nswire's back): GC
	// still finds its guard elements through their owner.
	lost := &nftables.Chain{Table: brTable, Name: namesOf(cs[0].att.ID()).guard}
	tp.fw.testConn(t).FlushChain(lost)
	tp.fw.testConn(t).DelChain(lost)
	must(t, tp.fw.testConn(t).Flush(), "delete record chain")
	valid := []types.GCAttachment{{ContainerID: cs[1].att.ContainerID, IfName: "eth0"}}
	must(t, tp.fw.GC(b.Network, valid), "GC")
	// One valid attachment and the other network's: one element each, two
	// in gip6 (address and link-local).
	for set, want := range map[string]int{setGuarded: 2, setGMAC: 2, setGIP4: 2, setGIP6: 4} {
		if n := tp.count(brTable, set); n != want {
			t.Fatalf("after GC set %s has %d elements, want %d", set, n, want)
		}
	}
	if n := tp.count(inetTable, "dnat4any"); n != 2 {
		t.Fatalf("after GC dnat4any has %d, want 2 (one valid + other network)", n)
	}
	must(t, tp.fw.Check(cs[1].att), "valid attachment survives")
	must(t, tp.fw.Check(o.att), "other network survives")
	if err := tp.fw.Check(cs[0].att); err == nil {
		t.Fatal("collected attachment still checks")
	}
	// Without a record, b owns no network-level element (another network
	// may have taken its subnets over): GC leaves them.
	must(t, tp.fw.SetNetworks([]Network{other.Network}), "record networks")
	must(t, tp.fw.GC(b.Network, nil), "GC all")
	if n := tp.count(inetTable, "dnat4any"); n != 1 {
		t.Fatalf("after GC all dnat4any has %d, want 1", n)
	}
	if n := tp.count(inetTable, "masq4"); n != 4 {
		t.Fatalf("masq4 has %d elements, want 4 (GC of an unrecorded network)", n)
	}
	must(t, tp.fw.SetNetworks([]Network{b.Network, other.Network}), "record networks")
	must(t, tp.fw.GC(b.Network, nil), "GC all")
	// Network-level elements of the collected network are gone, the other's stay.
	if n := tp.count(inetTable, "masq4"); n != 2 { // start+end of one prefix
		t.Fatalf("masq4 has %d elements, want 2", n)
	}
	must(t, tp.fw.Check(o.att), "other network survives GC all")
}

func TestPortConflicts(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80}, Port{Proto: "tcp", HostAddr: addrOf(hostUp4), HostPort: 9000, ContainerPort: 80})
	tp.add(x)
	y := tp.addContainer(b, 3)
	snapshot := func() string {
		return fmt.Sprint(tp.count(inetTable, "dnat4any"), tp.count(inetTable, "dnat4"), tp.count(inetTable, "dnat6any"),
			tp.count(brTable, setGuarded), tp.chains(nftables.TableFamilyINet, attPrefix), tp.chains(nftables.TableFamilyBridge, guardPrefix))
	}
	before := snapshot()
	for _, tc := range []struct {
		ports []Port
		want  string
	}{
		{[]Port{{Proto: "tcp", HostPort: 8080, ContainerPort: 81}}, "hostPort 0.0.0.0:8080/tcp is already published by " + x.att.Net.Name + "/" + x.att.ContainerID + "/eth0"},
		{[]Port{{Proto: "tcp", HostPort: 7000, ContainerPort: 81}, {Proto: "tcp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, ContainerPort: 81}}, "hostPort 127.0.0.1:8080/tcp overlaps hostPort 0.0.0.0:8080/tcp"},
		{[]Port{{Proto: "tcp", HostPort: 9000, ContainerPort: 81}}, "hostPort 0.0.0.0:9000/tcp overlaps hostPort 203.0.113.1:9000/tcp"},
		{[]Port{{Proto: "tcp", HostAddr: addrOf(hostUp4), HostPort: 9000, ContainerPort: 81}}, "203.0.113.1:9000/tcp is already published"},
		{[]Port{{Proto: "tcp", HostPort: 0, ContainerPort: 81}}, "hostPort 0"},
		{[]Port{{Proto: "gre", HostPort: 80, ContainerPort: 81}}, "protocol"},
		{[]Port{{Proto: "tcp", HostAddr: netip.MustParseAddr("224.0.0.1"), HostPort: 80, ContainerPort: 81}}, "hostIP"},
	} {
		y.att.Ports = tc.ports
		wantCode(t, tp.fw.Add(y.att), types.ErrInvalidNetworkConfig, tc.want)
		if after := snapshot(); after != before {
			t.Fatalf("failed Add changed state: %s -> %s", before, after)
		}
	}
	// Other protocol or port: fine.
	y.att.Ports = []Port{{Proto: "udp", HostPort: 8080, ContainerPort: 80}}
	tp.add(y)
	must(t, tp.fw.Check(x.att), "x intact")
}

// Several processes adding at once on a fresh host, or on one whose
// tables another layout made: the tables are rebuilt once, every Add
// succeeds and keeps its elements.
func TestConcurrentAdds(t *testing.T) {
	t.Run("fresh", func(t *testing.T) { concurrentAdds(t, false) })
	t.Run("other layout", func(t *testing.T) { concurrentAdds(t, true) })
}

func concurrentAdds(t *testing.T, otherLayout bool) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	if otherLayout {
		tp.add(tp.addContainer(b, 2))
		c := tp.fw.testConn(t)
		for _, tb := range []*nftables.Table{inetTable, brTable} {
			c.FlushChain(&nftables.Chain{Table: tb, Name: stampChain})
		}
		must(t, c.Flush(), "unstamp")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fw, err := New(Options{NetNSFd: int(tp.host.Fd())})
			if err != nil {
				errs <- err
				return
			}
			defer fw.Close()
			_, ipn, _ := net.ParseCIDR(fmt.Sprintf("10.1.0.%d/24", 10+i))
			ipn.IP = net.ParseIP(fmt.Sprintf("10.1.0.%d", 10+i)).To4()
			errs <- fw.Add(&Attachment{Net: b.Network, ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0",
				HostIf: fmt.Sprintf("fake%d", i), IPs: []*net.IPNet{ipn},
				Ports: []Port{{Proto: "tcp", HostPort: uint16(10000 + i), ContainerPort: 80}}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err, "concurrent Add")
	}
	rules, err := tp.fw.testConn(t).GetRules(inetTable, &nftables.Chain{Name: "nat-pre", Table: inetTable})
	must(t, err, "rules")
	if len(rules) != 1 {
		t.Fatalf("nat-pre has %d rules, want 1", len(rules))
	}
	if n := tp.count(inetTable, "dnat4any"); n != 8 {
		t.Fatalf("dnat4any has %d, want 8", n)
	}
}

// Network-level elements follow the flags of the latest ADD, and an ADD
// that finds them as wanted (probed in its first round) leaves them be.
func TestNetworkElementsFollowFlags(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, func(n *Network) { n.ICC = false })
	settled := func(n Network) bool {
		t.Helper()
		as := networkAsserts(n, false)
		var reqs []*request
		for _, a := range as {
			reqs = append(reqs, a.probe()...)
		}
		must(t, tp.fw.q.exchange(reqs...), "probe")
		for _, a := range as {
			if !a.settled() {
				t.Logf("%s not as wanted (want %v)", a.set, a.want)
				return false
			}
		}
		return true
	}
	counts := func() map[string]int {
		out := map[string]int{}
		for _, s := range []string{nsNets, nsIntra, nsIso, nsMasq, nsNoICC} {
			for _, fam := range families {
				out[sN(s, fam)] = tp.count(inetTable, sN(s, fam))
			}
		}
		return out
	}
	// A /24 or /64 is two interval-set elements (start, end); a subnet
	// pair is one range element.
	on := map[string]int{"nets4": 2, "nets6": 2, "intra4": 1, "intra6": 1, "iso4": 2, "iso6": 2, "masq4": 2, "masq6": 2, "noicc4": 1, "noicc6": 1}
	off := map[string]int{"nets4": 2, "nets6": 2, "intra4": 1, "intra6": 1}

	if settled(b.Network) {
		t.Fatal("probes report the elements present before any ADD")
	}
	c := tp.addContainer(b, 2)
	tp.add(c)
	if got := counts(); !maps.Equal(got, withZeros(on)) {
		t.Fatalf("after ADD with every flag on: %v, want %v", got, on)
	}
	if !settled(b.Network) {
		t.Fatal("probes do not find the elements the ADD made")
	}

	d := tp.addContainer(b, 3)
	d.att.Net.Isolation, d.att.Net.ICC, d.att.Net.IPMasq = false, true, false
	tp.add(d)
	if got := counts(); !maps.Equal(got, withZeros(off)) {
		t.Fatalf("after ADD with the flags off: %v, want %v", got, off)
	}
	if !settled(d.att.Net) || settled(b.Network) {
		t.Fatal("probes disagree with the flags of the last ADD")
	}

	tp.add(c) // flags on again
	if got := counts(); !maps.Equal(got, withZeros(on)) {
		t.Fatalf("after ADD with the flags on again: %v, want %v", got, on)
	}
}

// withZeros completes m with a zero for every set counts() reports.
func withZeros(m map[string]int) map[string]int {
	out := map[string]int{}
	for _, s := range []string{nsNets, nsIntra, nsIso, nsMasq, nsNoICC} {
		for _, fam := range families {
			out[sN(s, fam)] = m[sN(s, fam)]
		}
	}
	return out
}

// TestSameTranslationConflicts: two attachments whose container address
// and port are equal (two networks with overlapping subnets) produce equal
// DNAT map data; a port one holds is still refused to the other, an
// overlap assertion never deletes the holder's element, and the loser's
// DEL leaves it alone.
func TestSameTranslationConflicts(t *testing.T) {
	tp := newTopo(t)
	b, b2 := tp.addBridge(1, nil), tp.addBridge(2, nil)
	x := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	tp.add(x)
	serve(t, x.ns, 80)
	y := tp.addContainer(b2, 2)
	y.att.IPs = x.att.IPs
	owner := x.att.Net.Name + "/" + x.att.ContainerID + "/eth0"
	for _, ports := range [][]Port{
		{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}},
		{{Proto: "tcp", HostAddr: addrOf(hostUp4), HostPort: 8080, ContainerPort: 80}},
	} {
		y.att.Ports = ports
		wantCode(t, tp.fw.Add(y.att), ErrPortConflict, owner)
		must(t, tp.fw.Del(y.att), "Del of the refused attachment")
		must(t, tp.fw.Check(x.att), "holder intact")
	}
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())
}
