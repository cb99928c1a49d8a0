package testutil

import (
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Upstream plays the internet behind a test host: a namespace linked to the
// host by a veth, 203.0.113.0/24 and 2001:db8:f::/64 (documentation ranges)
// between them. The host holds a metric-4000 blackhole for both ranges so
// nothing leaks if the link vanishes mid-test.
type Upstream struct {
	*NS
	HostIP4, HostIP6, IP4, IP6 net.IP
}

// NewUpstream links a fresh upstream namespace to h and turns on
// forwarding in h.
func NewUpstream(t T, h *Host) *Upstream {
	t.Helper()
	u := &Upstream{NS: NewNS(t),
		HostIP4: net.ParseIP("203.0.113.1"), HostIP6: net.ParseIP("2001:db8:f::1"),
		IP4: net.ParseIP("203.0.113.2"), IP6: net.ParseIP("2001:db8:f::2")}
	h.Sysctl("net/ipv4/ip_forward", "1")
	h.Sysctl("net/ipv6/conf/all/forwarding", "1")
	// Link-local addresses skip DAD too: a tentative one delays neighbour
	// discovery on the fresh link by a second or two.
	h.Sysctl("net/ipv6/conf/default/accept_dad", "0")
	u.Sysctl("net/ipv6/conf/default/accept_dad", "0")
	name := Name("up")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(u.Fd())}
	if err := h.Handle().LinkAdd(veth); err != nil {
		t.Fatalf("upstream veth: %v", err)
	}
	u.addr(t, h.NS, name, "203.0.113.1/24", "2001:db8:f::1/64")
	u.addr(t, u.NS, "eth0", "203.0.113.2/24", "2001:db8:f::2/64")
	for _, cidr := range []string{"203.0.113.0/24", "2001:db8:f::/64"} {
		_, dst, _ := net.ParseCIDR(cidr)
		if err := h.Handle().RouteAdd(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE, Priority: 4000}); err != nil {
			t.Fatalf("blackhole %s: %v", cidr, err)
		}
	}
	return u
}

func (u *Upstream) addr(t T, n *NS, link string, cidrs ...string) {
	t.Helper()
	l := n.Link(link)
	for _, c := range cidrs {
		a, _ := netlink.ParseAddr(c)
		a.Flags = unix.IFA_F_NODAD
		if err := n.Handle().AddrAdd(l, a); err != nil {
			t.Fatalf("addr %s on %s: %v", c, link, err)
		}
	}
	if err := n.Handle().LinkSetUp(l); err != nil {
		t.Fatalf("%s up: %v", link, err)
	}
}
