package link

import (
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/testutil"
)

func readProcSys(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// What netlink writes and reads must be what /proc/sys shows.
func TestDevconfMatchesProcSys(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	if err := n.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dc-a"}, PeerName: "dc-b"}); err != nil {
		t.Fatal(err)
	}
	n.Run(func() error {
		l, conf, err := linkWithConf("dc-a")
		if err != nil {
			return err
		}
		if conf.inetOn(ipv4ConfRouteLocalnet) {
			t.Error("fresh link: route_localnet on")
		}
		if want := readProcSys(t, "net/ipv6/conf/dc-a/accept_ra"); !conf.inet6Is(ipv6ConfAcceptRA, uint32(want[0]-'0')) {
			t.Errorf("accept_ra: /proc/sys says %s, the link message %v", want, conf.inet6)
		}
		for _, id := range []int{ipv4ConfRouteLocalnet, ipv4ConfArpNotify} {
			if err := enableInet(l.Attrs().Index, conf, id); err != nil {
				return err
			}
		}
		if err := (linkChange{index: l.Attrs().Index, addrGenNone: true}).apply(); err != nil {
			return err
		}
		for key, want := range map[string]string{
			"net/ipv4/conf/dc-a/route_localnet": "1", "net/ipv4/conf/dc-a/arp_notify": "1",
			"net/ipv6/conf/dc-a/addr_gen_mode": "1", "net/ipv4/conf/dc-b/arp_notify": "0",
		} {
			if got := readProcSys(t, key); got != want {
				t.Errorf("%s = %s, want %s", key, got, want)
			}
		}
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/dc-a/accept_ra", []byte("0"), 0o644); err != nil {
			return err
		}
		_, conf, err = linkWithConf("dc-a")
		if err != nil {
			return err
		}
		if !conf.inetOn(ipv4ConfRouteLocalnet) || !conf.inetOn(ipv4ConfArpNotify) || !conf.inet6Is(ipv6ConfAcceptRA, 0) {
			t.Errorf("linkWithConf does not report the settings: %v / %v", conf.inet, conf.inet6)
		}
		if _, _, err := linkWithConf("dc-none"); err == nil {
			t.Error("a missing link was found")
		}
		for _, v := range []string{"0", "1"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644); err != nil {
				return err
			}
			if on, err := forwarding(unix.AF_INET); err != nil || on != (v == "1") {
				t.Errorf("ip_forward %s: forwarding() = %v, %v", v, on, err)
			}
		}
		return nil
	})
}

// markUp turns address generation off in the same request that brings the
// link up; that holds only because the peer is still down then. Once the
// peer comes up (carrier), the host end must still have no address.
func TestMarkUpLeavesNoLinkLocal(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	h := n.Handle()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mu-host"}, PeerName: "mu-peer"}); err != nil {
		t.Fatal(err)
	}
	host := n.Link("mu-host")
	n.Run(func() error { return markUp(host.Attrs().Index, "nswire/test") })
	if err := h.LinkSetUp(n.Link("mu-peer")); err != nil {
		t.Fatal(err)
	}
	// The kernel configures addresses synchronously on the carrier change.
	addrs, err := h.AddrList(host, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 0 {
		t.Fatalf("host end got %v", addrs)
	}
	if peer, _ := h.AddrList(n.Link("mu-peer"), netlink.FAMILY_V6); len(peer) == 0 {
		t.Fatal("peer got no link-local address either: the check proves nothing")
	}
	if a := n.Link("mu-host").Attrs(); a.Alias != "nswire/test" || a.Flags&1 == 0 {
		t.Fatalf("alias %q flags %v", a.Alias, a.Flags)
	}
}
