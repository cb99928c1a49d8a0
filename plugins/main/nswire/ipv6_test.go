package main

import (
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/testutil"
)

// TestRogueRouterAdvert: on a dual-stack network a container may send a
// router advertisement from its own link-local address, which anti-spoofing
// lets through. Its neighbours must not take a default route through it
// (CVE-2020-13401). A control container set back to accept_ra=1 shows the
// advertisement did arrive.
func TestRogueRouterAdvert(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.66.0.0/24", "fd66::/64")
	victim := f.add(list, "victim")
	control := f.add(list, "control")
	rogue := f.add(list, "rogue")
	control.ns.Sysctl("net/ipv6/conf/eth0/accept_ra", "1")

	rogue.ns.Run(func() error { return sendRouterAdvert("eth0") })
	deadline := time.Now().Add(5 * time.Second)
	for len(raRoutes(t, control.ns)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the control container never saw the router advertisement")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := raRoutes(t, victim.ns); len(got) > 0 {
		t.Errorf("a container took routes from another container's router advertisement: %v", got)
	}
	for _, c := range []*container{victim, control, rogue} {
		f.del(list, c)
	}
	f.host.AssertNoLeaks()
}

// sendRouterAdvert sends a minimal router advertisement (router lifetime
// 1800 s) to all nodes on ifName, from its link-local address.
func sendRouterAdvert(ifName string) error {
	ifi, err := net.InterfaceByName(ifName)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index); err != nil {
		return err
	}
	// type 134, code 0, checksum (the kernel fills it), hop limit 64,
	// flags 0, router lifetime 1800, reachable time 0, retrans timer 0.
	ra := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	to := &unix.SockaddrInet6{ZoneId: uint32(ifi.Index)}
	copy(to.Addr[:], net.ParseIP("ff02::1"))
	return unix.Sendto(fd, ra, 0, to)
}

// raRoutes lists the IPv6 routes a router advertisement installed.
func raRoutes(t *testing.T, n *testutil.NS) []netlink.Route {
	t.Helper()
	routes, err := n.Handle().RouteList(nil, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_RA {
			out = append(out, r)
		}
	}
	return out
}
