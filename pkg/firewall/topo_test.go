package firewall

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Test topology, entirely inside namespaces created here:
//
//	upstream netns  --veth--  host netns  --bridge(s)--  container netns...
//	203.0.113.2/24            203.0.113.1/24             10.N.0.x/24
//	2001:db8:f::2/64          2001:db8:f::1/64           fd00:N::x/64
//
// The host netns holds a blackhole route for the upstream range (metric
// 4000) so nothing can leak if the link goes away.
var (
	hostUp4 = net.ParseIP("203.0.113.1").To4()
	up4     = net.ParseIP("203.0.113.2").To4()
	hostUp6 = net.ParseIP("2001:db8:f::1")
	up6     = net.ParseIP("2001:db8:f::2")
)

type topo struct {
	t    *testing.T
	host ns.NetNS
	up   ns.NetNS
	hh   *netlink.Handle // host handle
	fw   *Firewall
	tag  string
}

type bnet struct {
	Network
	idx int
	gw4 net.IP
	gw6 net.IP
}

type ctr struct {
	ns     ns.NetNS
	hostIf string
	ip4    net.IP
	ip6    net.IP
	mac    net.HardwareAddr
	att    *Attachment
}

func randTag() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func newNS(t testing.TB) ns.NetNS {
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

func handleIn(t testing.TB, n ns.NetNS) *netlink.Handle {
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

func sysctl(t testing.TB, n ns.NetNS, kv ...string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		for i := 0; i < len(kv); i += 2 {
			p := "/proc/sys/" + strings.ReplaceAll(kv[i], ".", "/")
			if err := os.WriteFile(p, []byte(kv[i+1]), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	must(t, err, "sysctl %v", kv)
}

func addAddr(t testing.TB, h *netlink.Handle, l netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, err, "parse %s", cidr)
	a.Flags = unix.IFA_F_NODAD
	must(t, h.AddrAdd(l, a), "addr add %s", cidr)
}

func newTopo(t *testing.T) *topo {
	needRoot(t)
	tp := &topo{t: t, host: newNS(t), up: newNS(t), tag: randTag()}
	tp.hh = handleIn(t, tp.host)
	uh := handleIn(t, tp.up)
	sysctl(t, tp.host, "net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "1")
	for _, h := range []*netlink.Handle{tp.hh, uh} {
		lo, err := h.LinkByName("lo")
		must(t, err, "lo")
		must(t, h.LinkSetUp(lo), "lo up")
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(tp.up.Fd())}
	must(t, tp.hh.LinkAdd(veth), "upstream veth")
	hl, err := tp.hh.LinkByName("up0")
	must(t, err, "up0")
	addAddr(t, tp.hh, hl, "203.0.113.1/24")
	addAddr(t, tp.hh, hl, "2001:db8:f::1/64")
	must(t, tp.hh.LinkSetUp(hl), "up0 up")
	ul, err := uh.LinkByName("eth0")
	must(t, err, "upstream eth0")
	addAddr(t, uh, ul, "203.0.113.2/24")
	addAddr(t, uh, ul, "2001:db8:f::2/64")
	must(t, uh.LinkSetUp(ul), "upstream eth0 up")
	for _, cidr := range []string{"203.0.113.0/24", "2001:db8:f::/64"} {
		_, dst, _ := net.ParseCIDR(cidr)
		must(t, tp.hh.RouteAdd(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE, Priority: 4000}), "blackhole %s", cidr)
	}
	tp.fw, err = New(Options{NetNSFd: int(tp.host.Fd())})
	must(t, err, "firewall.New")
	t.Cleanup(tp.fw.Close)
	return tp
}

// addBridge creates bridge br<idx> with 10.<idx>.0.1/24 and fd00:<idx>::1/64.
func (tp *topo) addBridge(idx int, mod func(*Network)) *bnet {
	t := tp.t
	name := fmt.Sprintf("br%d", idx)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	must(t, tp.hh.LinkAdd(br), "bridge %s", name)
	l, err := tp.hh.LinkByName(name)
	must(t, err, "bridge")
	addAddr(t, tp.hh, l, fmt.Sprintf("10.%d.0.1/24", idx))
	addAddr(t, tp.hh, l, fmt.Sprintf("fd00:%d::1/64", idx))
	must(t, tp.hh.LinkSetUp(l), "bridge up")
	sysctl(t, tp.host, "net.ipv4.conf."+name+".route_localnet", "1")
	_, s4, _ := net.ParseCIDR(fmt.Sprintf("10.%d.0.0/24", idx))
	_, s6, _ := net.ParseCIDR(fmt.Sprintf("fd00:%d::/64", idx))
	b := &bnet{Network: Network{Name: fmt.Sprintf("net%d-%s", idx, tp.tag), Bridge: name,
		Subnets: []*net.IPNet{s4, s6}, IPMasq: true, Isolation: true, ICC: true}, idx: idx,
		gw4: net.ParseIP(fmt.Sprintf("10.%d.0.1", idx)), gw6: net.ParseIP(fmt.Sprintf("fd00:%d::1", idx))}
	if mod != nil {
		mod(&b.Network)
	}
	return b
}

var ctrSeq atomic.Int32

// addContainer creates a container netns with eth0 on the bridge at host
// number n, and the Attachment describing it (not yet added).
func (tp *topo) addContainer(b *bnet, n int, ports ...Port) *ctr {
	t := tp.t
	c := &ctr{ns: newNS(t), hostIf: fmt.Sprintf("v%d-%d", b.idx, n),
		ip4: net.ParseIP(fmt.Sprintf("10.%d.0.%d", b.idx, n)).To4(),
		ip6: net.ParseIP(fmt.Sprintf("fd00:%d::%d", b.idx, n))}
	br, err := tp.hh.LinkByName(b.Bridge)
	must(t, err, "bridge")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: c.hostIf, MasterIndex: br.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(c.ns.Fd())}
	must(t, tp.hh.LinkAdd(veth), "veth %s", c.hostIf)
	hl, err := tp.hh.LinkByName(c.hostIf)
	must(t, err, "host veth")
	must(t, tp.hh.LinkSetUp(hl), "host veth up")
	// Like Docker without userland proxy: a container reaching its own
	// published port comes back through its own port.
	must(t, tp.hh.LinkSetHairpin(hl, true), "hairpin")
	ch := handleIn(t, c.ns)
	for _, name := range []string{"lo", "eth0"} {
		l, err := ch.LinkByName(name)
		must(t, err, "link %s", name)
		must(t, ch.LinkSetUp(l), "up %s", name)
		if name == "eth0" {
			c.mac = l.Attrs().HardwareAddr
			addAddr(t, ch, l, c.ip4.String()+"/24")
			addAddr(t, ch, l, c.ip6.String()+"/64")
			must(t, ch.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: b.gw4}), "default route v4")
			must(t, ch.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: b.gw6}), "default route v6")
		}
	}
	_, s4, _ := net.ParseCIDR(c.ip4.String() + "/24")
	_, s6, _ := net.ParseCIDR(c.ip6.String() + "/64")
	s4.IP, s6.IP = c.ip4, c.ip6
	c.att = &Attachment{Net: b.Network, ContainerID: fmt.Sprintf("ctr%d-%s", ctrSeq.Add(1), tp.tag), IfName: "eth0",
		HostIf: c.hostIf, IPs: []*net.IPNet{s4, s6}, MAC: c.mac, Ports: ports}
	return c
}

// serve starts a TCP and a UDP server in n on port that answer every
// connection or datagram with the peer address as they see it.
func serve(t testing.TB, n ns.NetNS, port int) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	})
	must(t, err, "listen :%d", port)
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(a.String()+"\n"), a)
		}
	}()
}

// ask connects from netns n (optionally from local address src) to addr
// and returns the peer address the server saw.
func ask(n ns.NetNS, network, addr string, src net.IP) (string, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 700 * time.Millisecond}
		if src != nil {
			if network == "tcp" {
				d.LocalAddr = &net.TCPAddr{IP: src}
			} else {
				d.LocalAddr = &net.UDPAddr{IP: src}
			}
		}
		var err error
		c, err = d.Dial(network, addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(700 * time.Millisecond))
	if network == "udp" {
		if _, err := c.Write([]byte("hi")); err != nil {
			return "", err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	h, _, err := net.SplitHostPort(strings.TrimSpace(line))
	return h, err
}

func (tp *topo) mustReach(from ns.NetNS, network, addr string, src net.IP, wantPeer string) {
	tp.t.Helper()
	var got string
	var err error
	// UDP has no handshake: one retry covers a lost first datagram (ND).
	for i := 0; i < 3; i++ {
		if got, err = ask(from, network, addr, src); err == nil {
			break
		}
	}
	if err != nil {
		tp.t.Fatalf("%s %s: not reachable: %v", network, addr, err)
	}
	if wantPeer != "" && got != wantPeer {
		tp.t.Fatalf("%s %s: server saw peer %s, want %s", network, addr, got, wantPeer)
	}
}

func (tp *topo) mustNotReach(from ns.NetNS, network, addr string, src net.IP) {
	tp.t.Helper()
	if got, err := ask(from, network, addr, src); err == nil {
		tp.t.Fatalf("%s %s: reachable (peer seen as %s), want blocked", network, addr, got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func hp(ip net.IP, port int) string { return net.JoinHostPort(ip.String(), fmt.Sprint(port)) }

// testConns holds each firewall's testConn, so that messages queued
// through one call are sent by the Flush of the next.
var testConns sync.Map // *Firewall -> *nftables.Conn

// testConn is a google/nftables connection in the firewall's namespace,
// for listings and for damage done by hand; closed when the test ends.
func (f *Firewall) testConn(t testing.TB) *nftables.Conn {
	t.Helper()
	if c, ok := testConns.Load(f); ok {
		return c.(*nftables.Conn)
	}
	c, err := newConn(f.fd)
	must(t, err, "nftables conn")
	testConns.Store(f, c)
	t.Cleanup(func() { testConns.Delete(f); _ = c.CloseLasting() })
	return c
}

// addrOf is ip as a netip.Addr (IPv4 as 4 bytes).
func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
