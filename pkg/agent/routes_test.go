package agent

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/testutil"
)

// lanNS is a namespace with an uplink on 192.0.2.0/24 and 2001:db8:1::/64
// (a veth pair with both ends up, so it has carrier) and default routes
// through a router at .1 / ::1, so addresses elsewhere are off-link.
func lanNS(t *testing.T) *testutil.NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and routes")
	}
	n := testutil.NewNS(t)
	h := n.Handle()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0p"}); err != nil {
		t.Fatal(err)
	}
	up := n.Link("up0")
	for _, l := range []netlink.Link{up, n.Link("up0p")} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, cidr := range []string{"192.0.2.10/24", "2001:db8:1::10/64"} {
		a, _ := netlink.ParseAddr(cidr)
		a.Flags = unix.IFA_F_NODAD
		if err := h.AddrAdd(up, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, gw := range []string{"192.0.2.1", "2001:db8:1::1"} {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			t.Fatalf("default route via %s: %v", gw, err)
		}
	}
	return n
}

// ours lists the routes with RouteProtocol: destination -> gateway.
func ours(t *testing.T, r *Routes) map[string]string {
	t.Helper()
	list, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, rt := range list {
		if _, dup := out[rt.Dst.String()]; dup {
			t.Errorf("two routes of ours to %s", rt.Dst)
		}
		out[rt.Dst.String()] = rt.Gw.String()
	}
	return out
}

func nr(node, dst, gw string) NodeRoute {
	return NodeRoute{Node: node, Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr(gw)}
}

func expectRoutes(t *testing.T, r *Routes, want map[string]string) {
	t.Helper()
	got := ours(t, r)
	if len(got) != len(want) {
		t.Errorf("routes of ours %v, want %v", got, want)
	}
	for dst, gw := range want {
		if got[dst] != gw {
			t.Errorf("route to %s via %q, want via %q (all: %v)", dst, got[dst], gw, got)
		}
	}
}

func syncOK(t *testing.T, r *Routes, want []NodeRoute) SyncResult {
	t.Helper()
	res, err := r.Sync(want)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

func TestRoutesReconcile(t *testing.T) {
	n := lanNS(t)
	r := NewRoutes(n.Handle())
	foreign := &netlink.Route{Dst: prefixNet(netip.MustParsePrefix("10.244.9.0/24")), Gw: net.ParseIP("192.0.2.99"), Protocol: unix.RTPROT_STATIC}
	if err := n.Handle().RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	want := []NodeRoute{
		nr("a", "10.244.1.0/24", "192.0.2.1"),
		nr("b", "10.244.2.0/24", "192.0.2.2"),
		nr("far", "10.244.3.0/24", "198.51.100.7"), // through the router: host-gw cannot reach it
		nr("me", "10.244.4.0/24", "192.0.2.10"),    // an address of this host
		nr("d", "10.244.9.0/24", "192.0.2.4"),      // the foreign route holds it
		nr("a", "fd00:10:244:1::/64", "2001:db8:1::1"),
	}
	res := syncOK(t, r, want)
	expectRoutes(t, r, map[string]string{"10.244.1.0/24": "192.0.2.1", "10.244.2.0/24": "192.0.2.2", "fd00:10:244:1::/64": "2001:db8:1::1"})
	if res.Programmed != 3 {
		t.Errorf("programmed %d, want 3", res.Programmed)
	}
	skipped := map[string]string{}
	for _, s := range res.Skipped {
		skipped[s.Node] = s.Reason
	}
	if skipped["far"] != ReasonUnreachable || skipped["me"] != ReasonUnreachable || skipped["d"] != ReasonConflict || len(skipped) != 3 {
		t.Errorf("skipped %+v", res.Skipped)
	}
	expectForeign(t, n, foreign)

	if again := syncOK(t, r, want); again.Programmed != 3 || len(again.Skipped) != 3 {
		t.Errorf("second sync: %+v", again)
	}

	want[0] = nr("a", "10.244.1.0/24", "192.0.2.5") // a's address changed
	want = append(want[:1], want[2:]...)            // b deleted
	syncOK(t, r, want)
	expectRoutes(t, r, map[string]string{"10.244.1.0/24": "192.0.2.5", "fd00:10:244:1::/64": "2001:db8:1::1"})

	list, _ := r.List()
	for _, rt := range list {
		if err := n.Handle().RouteDel(&rt); err != nil { // an admin's `ip route del`
			t.Fatal(err)
		}
	}
	stray := &netlink.Route{Dst: prefixNet(netip.MustParsePrefix("10.244.50.0/24")), Gw: net.ParseIP("192.0.2.50"), Protocol: RouteProtocol}
	if err := n.Handle().RouteAdd(stray); err != nil { // ours, left by a node deleted while the agent was down
		t.Fatal(err)
	}
	syncOK(t, r, want)
	expectRoutes(t, r, map[string]string{"10.244.1.0/24": "192.0.2.5", "fd00:10:244:1::/64": "2001:db8:1::1"})

	syncOK(t, r, nil)
	expectRoutes(t, r, map[string]string{})
	expectForeign(t, n, foreign)
}

// expectForeign checks that the route of another protocol is as it was.
func expectForeign(t *testing.T, n *testutil.NS, foreign *netlink.Route) {
	t.Helper()
	list, err := n.Handle().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign.Dst}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !list[0].Gw.Equal(foreign.Gw) || list[0].Protocol != foreign.Protocol {
		t.Errorf("foreign route changed: %+v", list)
	}
}
