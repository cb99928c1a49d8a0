package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

// Several nswire networks on one host (issue #17). A subnet, and a bridge,
// belong to the network that has live attachments in them on this host:
// another network's ADD that overlaps them is refused (error 7, naming
// that network and its subnet or bridge) and changes nothing. A network
// with no live attachment (all DELeted, or their namespaces gone without
// DEL) owns nothing, and the next network that needs its subnet or bridge
// takes it over.

// nwNet is one nswire network on a test host: name, bridge and IPAM store
// (the fixture), its settings and its subnets (one range set each).
type nwNet struct {
	*fixture
	extra   map[string]any
	subnets []string
}

// nwNetwork makes a network with a fresh name and bridge on f's host.
func nwNetwork(f *fixture, extra map[string]any, subnets ...string) *nwNet {
	g := &fixture{t: f.t, host: f.host, name: testutil.Name("nw"), bridge: testutil.Name("nwbr"), ipam: f.ipam}
	return &nwNet{fixture: g, extra: extra, subnets: subnets}
}

// reconfigured is the same network (name, IPAM store) with another
// configuration; bridge "" keeps the bridge.
func (n *nwNet) reconfigured(bridge string, extra map[string]any, subnets ...string) *nwNet {
	g := *n.fixture
	if bridge != "" {
		g.bridge = bridge
	}
	return &nwNet{fixture: &g, extra: extra, subnets: subnets}
}

func (n *nwNet) routed() bool { return n.extra["mode"] == "routed" }

// conf is the network's conflist; it accepts published ports.
func (n *nwNet) conf() *libcni.NetworkConfigList {
	extra := map[string]any{"capabilities": map[string]bool{"portMappings": true}}
	for k, v := range n.extra {
		extra[k] = v
	}
	return n.list("1.1.0", extra, n.subnets...)
}

func (n *nwNet) mustAdd(id string, caps map[string]any) *container {
	n.t.Helper()
	c, err := n.addWith(n.conf(), id, caps)
	if err != nil {
		n.t.Fatalf("ADD %s to network %q: %v", id, n.name, err)
	}
	return c
}

func (n *nwNet) mustDel(c *container) {
	n.t.Helper()
	n.del(n.conf(), c)
}

// nwKill destroys c's veth pair the way the kernel does when the
// container's namespace goes away without a DEL: no CNI call at all.
func nwKill(t *testing.T, n *nwNet, c *container) {
	t.Helper()
	if err := c.ns.Handle().LinkDel(c.ns.Link("eth0")); err != nil {
		t.Fatalf("delete eth0 of %s: %v", c.rt.ContainerID, err)
	}
	if _, err := n.host.Handle().LinkByName(n.hostVeth(c)); err == nil {
		t.Fatalf("host veth %s outlived its peer", n.hostVeth(c))
	}
}

// nwHostState is what a refused ADD must leave untouched: links,
// addresses and routes, and every nftables object.
type nwHostState struct{ links, nft string }

func nwState(t *testing.T, h *testutil.Host) nwHostState {
	t.Helper()
	return nwHostState{links: nwLinks(h.Snapshot()), nft: nwNftDump(t, h.NS)}
}

// nwLinks drops from a Snapshot what the kernel changes by itself after an
// ADD, with a delay (linkwatch): the running flag and IPv6 link-local
// addresses and routes.
func nwLinks(snapshot string) string {
	var out []string
	for _, l := range strings.Split(snapshot, "\n") {
		if strings.Contains(l, "fe80:") {
			continue
		}
		l = strings.ReplaceAll(l, "|running", "")
		l = strings.ReplaceAll(l, "running|", "")
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// nwNftDump lists every nftables table, chain (with its rules) and set
// (with its elements) of namespace n, one sorted line each; rule handles
// included, so a rule deleted and made again shows as changed.
func nwNftDump(t *testing.T, n *testutil.NS) string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var lines []string
	for _, tb := range tables {
		id := fmt.Sprintf("%d/%s", tb.Family, tb.Name)
		lines = append(lines, "table "+id)
		chains, err := c.ListChainsOfTableFamily(tb.Family)
		if err != nil {
			t.Fatalf("list chains of %s: %v", id, err)
		}
		for _, ch := range chains {
			if ch.Table.Name != tb.Name {
				continue
			}
			hook := ""
			if ch.Hooknum != nil && ch.Priority != nil {
				hook = fmt.Sprintf(" type %s hook %d priority %d", ch.Type, *ch.Hooknum, *ch.Priority)
			}
			lines = append(lines, fmt.Sprintf("chain %s %s%s", id, ch.Name, hook))
			rules, err := c.GetRules(tb, ch)
			if err != nil {
				t.Fatalf("list rules of %s %s: %v", id, ch.Name, err)
			}
			for _, r := range rules {
				var b strings.Builder
				fmt.Fprintf(&b, "rule %s %s handle %d userdata %x", id, ch.Name, r.Handle, r.UserData)
				for _, e := range r.Exprs {
					fmt.Fprintf(&b, " %T%+v", e, e)
				}
				lines = append(lines, b.String())
			}
		}
		sets, err := c.GetSets(tb)
		if err != nil {
			t.Fatalf("list sets of %s: %v", id, err)
		}
		for _, s := range sets {
			lines = append(lines, fmt.Sprintf("set %s %s", id, s.Name))
			els, err := c.GetSetElements(s)
			if err != nil {
				t.Fatalf("list elements of %s %s: %v", id, s.Name, err)
			}
			for _, e := range els {
				lines = append(lines, fmt.Sprintf("element %s %s key %x keyend %x end %v val %x verdict %+v comment %q",
					id, s.Name, e.Key, e.KeyEnd, e.IntervalEnd, e.Val, e.VerdictData, e.Comment))
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// nwRefused ADDs a container to n and wants CNI error 7 whose message
// holds each of words, and the host (links, addresses, routes, nftables,
// n's reservations) and the container left exactly as they were.
func nwRefused(t *testing.T, n *nwNet, id string, words ...string) {
	t.Helper()
	before, reserved := nwState(t, n.host), n.reservations()
	c, err := n.addWith(n.conf(), id, nil)
	cniErr(t, err, types.ErrInvalidNetworkConfig)
	// The plugin's own message: libcni's wrapping names the network ADDed.
	var e *types.Error
	errors.As(err, &e)
	for _, w := range words {
		if !strings.Contains(e.Msg+" "+e.Details, w) {
			t.Errorf("refusal of %s does not mention %s: %q (details %q)", n.name, w, e.Msg, e.Details)
		}
	}
	after := nwState(t, n.host)
	if after.links != before.links {
		t.Errorf("refused ADD changed the host's links:\nbefore:\n%s\nafter:\n%s", before.links, after.links)
	}
	if after.nft != before.nft {
		t.Errorf("refused ADD changed the host's nftables:\n%s", nwDiff(before.nft, after.nft))
	}
	if r := n.reservations(); r != reserved {
		t.Errorf("refused ADD left %d reservations in %s, had %d", r, n.name, reserved)
	}
	if links := c.ns.Links(); len(links) != 1 {
		t.Errorf("refused ADD left %v in the container, want only lo", links)
	}
}

// nwDiff lists the lines only in a (-) and only in b (+).
func nwDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// nwQuoted is how a refusal names a network: in double quotes.
func nwQuoted(n *nwNet) string { return `"` + n.name + `"` }

// nwCIDR is a subnet as Go prints it (the form messages use).
func nwCIDR(t *testing.T, s string) string {
	t.Helper()
	_, ipn, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return ipn.String()
}

// nwAssertRoutedVia checks that the host routes each address of c through
// n: n's bridge in bridge mode, c's host veth in routed mode.
func nwAssertRoutedVia(t *testing.T, n *nwNet, c *container) {
	t.Helper()
	dev := n.bridge
	if n.routed() {
		dev = n.hostVeth(c)
	}
	want, err := n.host.Handle().LinkByName(dev)
	if err != nil {
		t.Errorf("%s of network %q: %v", dev, n.name, err)
		return
	}
	for _, ipc := range c.res.IPs {
		routes, err := n.host.Handle().RouteGet(ipc.Address.IP)
		if err != nil || len(routes) == 0 {
			t.Errorf("host route to %s: %v", ipc.Address.IP, err)
			continue
		}
		if got := routes[0].LinkIndex; got != want.Attrs().Index {
			name := fmt.Sprint(got)
			if l, err := n.host.Handle().LinkByIndex(got); err == nil {
				name = l.Attrs().Name
			}
			t.Errorf("host routes %s via %s, want %s (network %q)", ipc.Address.IP, name, dev, n.name)
		}
	}
}

// nwAssertReleased checks that bridge, if it still exists, holds no
// address inside any of subnets (IPv6 link-local aside).
func nwAssertReleased(t *testing.T, h *testutil.Host, bridge string, subnets ...string) {
	t.Helper()
	br, err := h.Handle().LinkByName(bridge)
	if err != nil {
		return // gone: it holds nothing
	}
	addrs, err := h.Handle().AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		for _, s := range subnets {
			if _, ipn, _ := net.ParseCIDR(s); ipn.Contains(a.IP) {
				t.Errorf("bridge %s still holds %s, inside %s", bridge, a.IPNet, s)
			}
		}
	}
}

// nwBridgeHolds reports whether the bridge holds exactly the address cidr
// (gateway with its prefix length).
func nwBridgeHolds(t *testing.T, h *testutil.Host, bridge, cidr string) bool {
	t.Helper()
	want, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.Handle().AddrList(h.Link(bridge), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == want.IPNet.String() {
			return true
		}
	}
	return false
}

// nwAssertHostReaches proves TCP from the host to every address of c.
func nwAssertHostReaches(t *testing.T, h *testutil.Host, c *container) {
	t.Helper()
	for _, ipc := range c.res.IPs {
		if err := testutil.Connect(h.NS, c.ns, ipc.Address.IP); err != nil {
			t.Errorf("host -> %s (%s): %v", c.rt.ContainerID, ipc.Address.IP, err)
		}
	}
}

// nwAssertServes checks what the new owner of a subnet must get: the host
// and the upstream (through the published hostPort) reach c's server on
// port 80, and c reaches the upstream's server on 9000 masqueraded to the
// host's address. c serves on :80, the upstream on :9000.
func nwAssertServes(t *testing.T, h *testutil.Host, up *testutil.Upstream, c *container, hostPort int) {
	t.Helper()
	for _, ipc := range c.res.IPs {
		expectAnswer(t, h.NS, "tcp", net.JoinHostPort(ipc.Address.IP.String(), "80"), "")
	}
	if c.ip(true) != nil {
		expectAnswer(t, up.NS, "tcp", fmt.Sprintf("203.0.113.1:%d", hostPort), up.IP4.String())
		expectAnswer(t, c.ns, "tcp", "203.0.113.2:9000", up.HostIP4.String())
	}
	if c.ip(false) != nil {
		expectAnswer(t, up.NS, "tcp", fmt.Sprintf("[2001:db8:f::1]:%d", hostPort), up.IP6.String())
		expectAnswer(t, c.ns, "tcp", "[2001:db8:f::2]:9000", up.HostIP6.String())
	}
}

// nwAssertIsolated checks that a container of another network cannot
// reach c directly, but reaches its published hostPort.
func nwAssertIsolated(t *testing.T, other, c *container, hostPort int) {
	t.Helper()
	if c.ip(true) != nil {
		expectNoAnswer(t, other.ns, "tcp", net.JoinHostPort(c.ip(true).String(), "80"))
		expectAnswer(t, other.ns, "tcp", fmt.Sprintf("203.0.113.1:%d", hostPort), "")
	} else {
		expectNoAnswer(t, other.ns, "tcp", net.JoinHostPort(c.ip(false).String(), "80"))
		expectAnswer(t, other.ns, "tcp", fmt.Sprintf("[2001:db8:f::1]:%d", hostPort), "")
	}
}

// nwAssertNoReservations fails if any of the networks keeps a reservation.
func nwAssertNoReservations(t *testing.T, nets ...*nwNet) {
	t.Helper()
	for _, n := range nets {
		if r := n.reservations(); r != 0 {
			t.Errorf("network %q keeps %d reservations", n.name, r)
		}
	}
}

var nwRouted = map[string]any{"mode": "routed"}

// TestNetworksRefuseOverlap: while network A has a live container, an ADD
// of network B whose subnet equals, contains or lies inside one of A's is
// refused with error 7 naming A and that subnet, and changes nothing; A
// keeps working. Bridge and routed mode, IPv4, IPv6, and a dual-stack
// network that overlaps in one family only.
func TestNetworksRefuseOverlap(t *testing.T) {
	type other struct {
		name    string
		extra   map[string]any
		subnets []string
	}
	for _, tc := range []struct {
		name      string
		extra     map[string]any // A's settings
		subnets   []string       // A's subnets
		conflicts string         // the subnet of A's the refusals must name
		others    []other
	}{
		{"ipv4 bridge", nil, []string{"10.70.1.0/24"}, "10.70.1.0/24", []other{
			{"same", nil, []string{"10.70.1.0/24"}},
			{"wider", nil, []string{"10.70.0.0/16"}},
			{"narrower", nil, []string{"10.70.1.128/25"}},
			{"routed same", nwRouted, []string{"10.70.1.0/24"}},
		}},
		{"ipv6 bridge", nil, []string{"fd70:0:0:1::/64"}, "fd70:0:0:1::/64", []other{
			{"same", nil, []string{"fd70:0:0:1::/64"}},
			{"wider", nil, []string{"fd70::/48"}},
			{"narrower", nil, []string{"fd70:0:0:1::/80"}},
			{"routed wider", nwRouted, []string{"fd70::/48"}},
		}},
		{"ipv4 routed", nwRouted, []string{"10.71.1.0/24"}, "10.71.1.0/24", []other{
			{"bridge same", nil, []string{"10.71.1.0/24"}},
			{"bridge wider", nil, []string{"10.71.0.0/16"}},
			{"routed same", nwRouted, []string{"10.71.1.0/24"}},
			{"routed narrower", nwRouted, []string{"10.71.1.0/25"}},
		}},
		{"dual-stack overlapping in ipv6 only", nil, []string{"10.72.1.0/24", "fd72:0:0:1::/64"}, "fd72:0:0:1::/64", []other{
			{"bridge", nil, []string{"10.72.2.0/24", "fd72::/48"}},
			{"routed", nwRouted, []string{"10.72.2.0/24", "fd72:0:0:1::/64"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			a := nwNetwork(f, tc.extra, tc.subnets...)
			ca := a.mustAdd("a1", nil)
			nwAssertHostReaches(t, f.host, ca) // also lets the links settle
			for _, o := range tc.others {
				t.Run(o.name, func(t *testing.T) {
					b := nwNetwork(&fixture{t: t, host: f.host, ipam: f.ipam}, o.extra, o.subnets...)
					nwRefused(t, b, "b1", nwQuoted(a), nwCIDR(t, tc.conflicts))
				})
			}
			nwAssertHostReaches(t, f.host, ca)
			nwAssertRoutedVia(t, a, ca)
			a.mustDel(ca)
			f.host.AssertNoLeaks()
			nwAssertNoReservations(t, a)
		})
	}
}

// TestNetworksBridgeShared: two networks cannot share a bridge while one of
// them has a live container on it; once it has none, the other takes the
// bridge over (and the first one's gateway goes), and the roles swap.
func TestNetworksBridgeShared(t *testing.T) {
	f := newFixture(t)
	a := nwNetwork(f, nil, "10.73.1.0/24")
	b := nwNetwork(f, nil, "10.73.2.0/24")
	b.bridge = a.bridge
	bridgeWord := fmt.Sprintf("bridge %q", a.bridge)

	ca := a.mustAdd("a1", nil)
	nwAssertHostReaches(t, f.host, ca)
	nwRefused(t, b, "b1", bridgeWord, nwQuoted(a))
	nwAssertHostReaches(t, f.host, ca)
	a.mustDel(ca)

	cb := b.mustAdd("b2", nil)
	if !nwBridgeHolds(t, f.host, a.bridge, "10.73.2.1/24") {
		t.Errorf("bridge %s lacks B's gateway 10.73.2.1/24", a.bridge)
	}
	nwAssertReleased(t, f.host, a.bridge, a.subnets...)
	nwAssertRoutedVia(t, b, cb)
	nwAssertHostReaches(t, f.host, cb)
	nwRefused(t, a, "a2", bridgeWord, nwQuoted(b))
	b.mustDel(cb)

	ca = a.mustAdd("a3", nil)
	nwAssertReleased(t, f.host, a.bridge, b.subnets...)
	nwAssertRoutedVia(t, a, ca)
	nwAssertHostReaches(t, f.host, ca)
	a.mustDel(ca)
	f.host.AssertNoLeaks()
	nwAssertNoReservations(t, a, b)
}

// nwTakeOverCase is one network A that stops being live and one network B
// with the same subnets that takes them over.
type nwTakeOverCase struct {
	name    string
	a, b    map[string]any // settings
	subnets []string
	other   []string // subnets of a third, disjoint network (isolation)
}

// internal on A makes the take-over visible in the firewall: B's traffic
// out is dropped while A's elements for the subnet remain.
var nwInternal = map[string]any{"internal": true}

// nwTakeOverCases are the take-over cases over 10.<octet>.x.0/24 and
// fd<octet>:0:0:x::/64.
func nwTakeOverCases(octet string) []nwTakeOverCase {
	sub := func(i int) (string, string) {
		return fmt.Sprintf("10.%s.%d.0/24", octet, i), fmt.Sprintf("fd%s:0:0:%d::/64", octet, i)
	}
	var cases []nwTakeOverCase
	add := func(name string, a, b map[string]any, fams string, i int) {
		s4, s6 := sub(i)
		o4, o6 := sub(100 + i)
		c := nwTakeOverCase{name: name, a: a, b: b}
		if strings.Contains(fams, "4") {
			c.subnets, c.other = append(c.subnets, s4), append(c.other, o4)
		}
		if strings.Contains(fams, "6") {
			c.subnets, c.other = append(c.subnets, s6), append(c.other, o6)
		}
		cases = append(cases, c)
	}
	routedMasq := map[string]any{"mode": "routed", "ipMasq": true}
	routedInternal := map[string]any{"mode": "routed", "internal": true}
	add("ipv4 bridge", nwInternal, nil, "4", 1)
	add("ipv6 bridge", nwInternal, nil, "6", 2)
	add("dual-stack bridge", nil, nil, "46", 3)
	add("ipv4 routed", routedInternal, routedMasq, "4", 4)
	add("dual-stack routed", routedInternal, routedMasq, "46", 5)
	add("routed to bridge", routedInternal, nil, "4", 6)
	add("bridge to routed", nwInternal, routedMasq, "46", 7)
	return cases
}

// nwTakeOver drives one case: A attaches a container, which then either
// gets its DEL or dies without one (kill); B, on its own bridge, takes the
// subnets over: the host routes them through B, B's published port,
// masquerade and isolation work, A's bridge holds no address of them any
// more and A's next ADD is refused naming B. Once B's container is gone,
// A takes the subnets back.
func nwTakeOver(t *testing.T, tc nwTakeOverCase, kill bool) {
	f := newFixture(t)
	up := testutil.NewUpstream(t, f.host)
	testutil.Serve(t, up.NS, "tcp", ":9000")
	a := nwNetwork(f, tc.a, tc.subnets...)
	b := nwNetwork(f, tc.b, tc.subnets...)
	c := nwNetwork(f, nil, tc.other...)
	const hostPort = 8170

	ca := a.mustAdd("a1", nil)
	nwAssertHostReaches(t, f.host, ca)
	if kill {
		nwKill(t, a, ca)
	} else {
		a.mustDel(ca)
	}

	cb, err := b.addWith(b.conf(), "b1", ports(port(hostPort, 80, "tcp", "")))
	if err != nil {
		t.Fatalf("ADD to network %q after %q lost its containers: %v", b.name, a.name, err)
	}
	testutil.Serve(t, cb.ns, "tcp", ":80")
	nwAssertRoutedVia(t, b, cb)
	if !a.routed() {
		nwAssertReleased(t, f.host, a.bridge, tc.subnets...)
	}
	nwAssertServes(t, f.host, up, cb, hostPort)
	cc := c.mustAdd("c1", nil)
	nwAssertIsolated(t, cc, cb, hostPort)

	nwRefused(t, a, "a2", nwQuoted(b), nwCIDR(t, tc.subnets[0]))
	// A runtime's GC of A, which has no valid attachment left, must not
	// take the network-level elements B now relies on.
	if err := f.host.CNI.GCNetworkList(context.Background(), a.conf(), &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC of network %q: %v", a.name, err)
	}
	nwAssertServes(t, f.host, up, cb, hostPort)
	nwAssertIsolated(t, cc, cb, hostPort)
	if kill {
		// The runtime's late DEL of the dead container must not disturb B.
		a.mustDel(ca)
		nwAssertRoutedVia(t, b, cb)
		nwAssertServes(t, f.host, up, cb, hostPort)
	}

	b.mustDel(cb)
	c.mustDel(cc)
	ca = a.mustAdd("a3", nil)
	nwAssertRoutedVia(t, a, ca)
	if !b.routed() {
		nwAssertReleased(t, f.host, b.bridge, tc.subnets...)
	}
	nwAssertHostReaches(t, f.host, ca)
	a.mustDel(ca)
	f.host.AssertNoLeaks()
	nwAssertNoReservations(t, a, b, c)
}

// TestNetworksTakeOverAfterDel: network A's containers were all DELeted;
// network B with the same subnets on another bridge (or routed) takes them
// over, and gives them back once its own containers are gone.
func TestNetworksTakeOverAfterDel(t *testing.T) {
	for _, tc := range nwTakeOverCases("74") {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nwTakeOver(t, tc, false)
		})
	}
}

// TestNetworksTakeOverAfterDeath: as TestNetworksTakeOverAfterDel, but A's
// container died without DEL (its veth pair went with its namespace) and
// no GC ran; A's late DEL then leaves B alone.
func TestNetworksTakeOverAfterDeath(t *testing.T) {
	for _, tc := range nwTakeOverCases("75") {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nwTakeOver(t, tc, true)
		})
	}
}

// TestNetworksOverlapAfterDel: network A's containers are gone and network
// B's subnet overlaps A's without being equal (wider or narrower). B's ADD
// succeeds (it used to fail with 999 "file exists"), and B's container is
// reachable from the host even at an address inside A's old subnet.
func TestNetworksOverlapAfterDel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		a, b       map[string]any
		aSub, bSub string
		ip         string // B's container, inside both subnets
	}{
		{"ipv4 narrow then wide", nil, nil, "10.76.1.0/24", "10.76.0.0/16", "10.76.1.5"},
		{"ipv4 wide then narrow", nil, nil, "10.76.0.0/16", "10.76.1.0/24", "10.76.1.5"},
		{"ipv6 narrow then wide", nil, nil, "fd76:0:0:1::/64", "fd76::/48", "fd76:0:0:1::5"},
		{"ipv6 wide then narrow", nil, nil, "fd76::/48", "fd76:0:0:1::/64", "fd76:0:0:1::5"},
		{"routed narrow then wide", nwRouted, nwRouted, "10.76.1.0/24", "10.76.0.0/16", "10.76.1.5"},
		{"bridge narrow then routed wide", nil, nwRouted, "10.76.1.0/24", "10.76.0.0/16", "10.76.1.5"},
		{"routed narrow then bridge wide", nwRouted, nil, "10.76.1.0/24", "10.76.0.0/16", "10.76.1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			a := nwNetwork(f, tc.a, tc.aSub)
			bExtra := map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{tc.ip}}}}
			for k, v := range tc.b {
				bExtra[k] = v
			}
			b := nwNetwork(f, bExtra, tc.bSub)

			ca := a.mustAdd("a1", nil)
			nwAssertHostReaches(t, f.host, ca)
			a.mustDel(ca)

			cb := b.mustAdd("b1", nil)
			if got := cb.res.IPs[0].Address.IP.String(); got != tc.ip {
				t.Fatalf("B's container got %s, want %s", got, tc.ip)
			}
			nwAssertRoutedVia(t, b, cb)
			if !a.routed() {
				nwAssertReleased(t, f.host, a.bridge, tc.aSub, tc.bSub)
			}
			nwAssertHostReaches(t, f.host, cb)
			nwRefused(t, a, "a2", nwQuoted(b), nwCIDR(t, tc.bSub))
			b.mustDel(cb)
			f.host.AssertNoLeaks()
			nwAssertNoReservations(t, a, b)
		})
	}
}

// TestNetworksOwnChangeNotLive: a network without live containers whose
// configuration changed (subnet widened, bridge renamed, mode switched)
// takes the new configuration at its next ADD: its bridge is re-addressed
// or released, and the host routes its subnet to the new container.
func TestNetworksOwnChangeNotLive(t *testing.T) {
	for _, tc := range []struct {
		name           string
		extra, extra2  map[string]any
		from, to       string
		newBridge      bool
		oldGW, newGW   string // on the bridge before and after ("" in routed mode)
		releasedBridge bool   // the old bridge must hold nothing of the subnet
	}{
		{name: "ipv4 subnet widened", from: "10.77.1.0/24", to: "10.77.0.0/16", oldGW: "10.77.1.1/24", newGW: "10.77.0.1/16"},
		{name: "ipv6 subnet widened", from: "fd77:0:0:1::/64", to: "fd77::/48", oldGW: "fd77:0:0:1::1/64", newGW: "fd77::1/48"},
		{name: "ipv4 subnet narrowed", from: "10.77.0.0/16", to: "10.77.1.0/24", oldGW: "10.77.0.1/16", newGW: "10.77.1.1/24"},
		{name: "bridge renamed", from: "10.77.2.0/24", to: "10.77.2.0/24", newBridge: true, releasedBridge: true},
		{name: "bridge to routed", extra2: nwRouted, from: "10.77.3.0/24", to: "10.77.3.0/24", releasedBridge: true},
		{name: "routed to bridge", extra: nwRouted, from: "10.77.4.0/24", to: "10.77.4.0/24", newGW: "10.77.4.1/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			a := nwNetwork(f, tc.extra, tc.from)
			ca := a.mustAdd("a1", nil)
			nwAssertHostReaches(t, f.host, ca)
			if tc.oldGW != "" && !nwBridgeHolds(t, f.host, a.bridge, tc.oldGW) {
				t.Fatalf("bridge %s lacks %s before the change", a.bridge, tc.oldGW)
			}
			a.mustDel(ca)

			bridge := ""
			if tc.newBridge {
				bridge = testutil.Name("nwbr")
			}
			a2 := a.reconfigured(bridge, tc.extra2, tc.to)
			c := a2.mustAdd("a2", nil)
			nwAssertRoutedVia(t, a2, c)
			if tc.newGW != "" && !nwBridgeHolds(t, f.host, a2.bridge, tc.newGW) {
				t.Errorf("bridge %s lacks %s after the change", a2.bridge, tc.newGW)
			}
			if tc.oldGW != "" && nwBridgeHolds(t, f.host, a2.bridge, tc.oldGW) {
				t.Errorf("bridge %s still holds %s after the change", a2.bridge, tc.oldGW)
			}
			if tc.releasedBridge {
				nwAssertReleased(t, f.host, a.bridge, tc.from)
			}
			nwAssertHostReaches(t, f.host, c)
			a2.mustDel(c)
			f.host.AssertNoLeaks()
			nwAssertNoReservations(t, a2)
		})
	}
}

// TestNetworksOwnChangeLive: while a network has a live container, a
// change that drops one of its subnets or moves it off its bridge is
// refused (error 7 naming the network) and changes nothing; adding a
// subnet, flipping a flag or changing nonMasqueradeCIDRs is allowed, and
// a destination dropped from nonMasqueradeCIDRs is masqueraded again. Once the container is gone the
// change goes through.
func TestNetworksOwnChangeLive(t *testing.T) {
	f := newFixture(t)
	a := nwNetwork(f, nil, "10.78.1.0/24")
	ca := a.mustAdd("a1", nil)
	nwAssertHostReaches(t, f.host, ca)

	for _, tc := range []struct {
		name   string
		change *nwNet
	}{
		{"subnet widened", a.reconfigured("", nil, "10.78.0.0/16")},
		{"subnet replaced", a.reconfigured("", nil, "10.78.2.0/24")},
		{"bridge renamed", a.reconfigured(testutil.Name("nwbr"), nil, "10.78.1.0/24")},
		{"switched to routed", a.reconfigured("", nwRouted, "10.78.1.0/24")},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			tc.change.fixture.t = t
			nwRefused(t, tc.change, "r1", nwQuoted(a))
		})
	}
	nwAssertHostReaches(t, f.host, ca)
	nwAssertRoutedVia(t, a, ca)

	t.Run("allowed/isolation off", func(t *testing.T) {
		n := a.reconfigured("", map[string]any{"isolation": false}, "10.78.1.0/24")
		n.fixture.t = t
		c := n.mustAdd("flag", nil)
		nwAssertHostReaches(t, f.host, c)
		n.mustDel(c)
	})
	t.Run("allowed/nonMasqueradeCIDRs added, then dropped", func(t *testing.T) {
		up := testutil.NewUpstream(t, f.host)
		testutil.Serve(t, up.NS, "tcp", ":9000")
		// The upstream routes the subnet back through the host, so an
		// unmasqueraded connection is answered.
		_, sub, _ := net.ParseCIDR("10.78.1.0/24")
		if err := up.Handle().RouteAdd(&netlink.Route{Dst: sub, Gw: up.HostIP4}); err != nil {
			t.Fatal(err)
		}
		exempt := a.reconfigured("", map[string]any{"nonMasqueradeCIDRs": []string{"203.0.113.0/24"}}, "10.78.1.0/24")
		exempt.fixture.t = t
		c := exempt.mustAdd("nomasq", nil)
		expectAnswer(t, c.ns, "tcp", "203.0.113.2:9000", c.ip(true).String())
		back := a.reconfigured("", nil, "10.78.1.0/24")
		back.fixture.t = t
		c2 := back.mustAdd("masq", nil)
		expectAnswer(t, c2.ns, "tcp", "203.0.113.2:9000", up.HostIP4.String())
		expectAnswer(t, c.ns, "tcp", "203.0.113.2:9000", up.HostIP4.String())
		back.mustDel(c2)
		back.mustDel(c)
	})
	t.Run("allowed/subnet added", func(t *testing.T) {
		n := a.reconfigured("", nil, "10.78.1.0/24", "10.79.1.0/24")
		n.fixture.t = t
		c := n.mustAdd("more", nil)
		if len(c.res.IPs) != 2 {
			t.Fatalf("want an address per range set, got %v", c.res.IPs)
		}
		if !nwBridgeHolds(t, f.host, a.bridge, "10.79.1.1/24") {
			t.Errorf("bridge %s lacks the added gateway 10.79.1.1/24", a.bridge)
		}
		nwAssertRoutedVia(t, n, c)
		nwAssertHostReaches(t, f.host, c)
		n.mustDel(c)
	})
	nwAssertHostReaches(t, f.host, ca)
	a.mustDel(ca)

	wide := a.reconfigured("", nil, "10.78.0.0/16")
	c := wide.mustAdd("a2", nil)
	if !nwBridgeHolds(t, f.host, a.bridge, "10.78.0.1/16") || nwBridgeHolds(t, f.host, a.bridge, "10.78.1.1/24") {
		t.Errorf("bridge %s not re-addressed from 10.78.1.1/24 to 10.78.0.1/16", a.bridge)
	}
	nwAssertRoutedVia(t, wide, c)
	nwAssertHostReaches(t, f.host, c)
	wide.mustDel(c)
	f.host.AssertNoLeaks()
	nwAssertNoReservations(t, a)
}
