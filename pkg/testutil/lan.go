package testutil

import (
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LAN is one L2 segment between test namespaces: a bridge in a namespace
// of its own, to which Attach plugs others, as a switch would. Nodes of a
// simulated cluster sit on it.
type LAN struct {
	*NS
	bridge netlink.Link
}

// NewLAN makes the segment's namespace and its bridge, removed with the
// test.
func NewLAN(t T) *LAN {
	t.Helper()
	requireRoot(t)
	l := &LAN{NS: NewNS(t)}
	if err := l.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}}); err != nil {
		t.Fatalf("LAN bridge: %v", err)
	}
	l.bridge = l.Link("lan0")
	if err := l.Handle().LinkSetUp(l.bridge); err != nil {
		t.Fatalf("LAN bridge up: %v", err)
	}
	return l
}

// Attach plugs n into the segment as eth-lan holding cidrs (without DAD,
// so IPv6 works at once) and turns forwarding on in n: a node routes.
func (l *LAN) Attach(t T, n *NS, cidrs ...string) {
	t.Helper()
	// Link-local addresses skip DAD too: a tentative one delays neighbour
	// discovery on the fresh link by a second or two.
	l.Sysctl("net/ipv6/conf/default/accept_dad", "0")
	n.Sysctl("net/ipv6/conf/default/accept_dad", "0")
	port := Name("lp")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port, MasterIndex: l.bridge.Attrs().Index},
		PeerName: "eth-lan", PeerNamespace: netlink.NsFd(n.Fd())}
	if err := l.Handle().LinkAdd(veth); err != nil {
		t.Fatalf("LAN port: %v", err)
	}
	if err := l.Handle().LinkSetUp(l.Link(port)); err != nil {
		t.Fatalf("LAN port up: %v", err)
	}
	eth := n.Link("eth-lan")
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			t.Fatalf("LAN address %s: %v", c, err)
		}
		a.Flags = unix.IFA_F_NODAD
		if err := n.Handle().AddrAdd(eth, a); err != nil {
			t.Fatalf("LAN address %s: %v", c, err)
		}
	}
	if err := n.Handle().LinkSetUp(eth); err != nil {
		t.Fatalf("eth-lan up: %v", err)
	}
	n.Sysctl("net/ipv4/ip_forward", "1")
	n.Sysctl("net/ipv6/conf/all/forwarding", "1")
}
