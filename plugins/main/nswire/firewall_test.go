package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

// capList is a network accepting the portMappings and bandwidth capabilities.
func (f *fixture) capList(extra map[string]any, subnets ...string) *libcni.NetworkConfigList {
	if extra == nil {
		extra = map[string]any{}
	}
	extra["capabilities"] = map[string]bool{"portMappings": true, "bandwidth": true}
	return f.list("1.1.0", extra, subnets...)
}

// addWith ADDs a container with capability args.
func (f *fixture) addWith(list *libcni.NetworkConfigList, id string, caps map[string]any) (*container, error) {
	c := &container{ns: testutil.NewNS(f.t)}
	c.rt = testutil.RT(id, c.ns, "eth0")
	c.rt.CapabilityArgs = caps
	r, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt)
	if err == nil {
		c.res = testutil.Result(f.t, r)
	}
	return c, err
}

func ports(p ...map[string]any) map[string]any {
	list := make([]any, len(p))
	for i := range p {
		list[i] = p[i]
	}
	return map[string]any{"portMappings": list}
}

func port(host, cont int, proto, hostIP string) map[string]any {
	return map[string]any{"hostPort": host, "containerPort": cont, "protocol": proto, "hostIP": hostIP}
}

func expectAnswer(t *testing.T, from *testutil.NS, network, addr, wantSource string) {
	t.Helper()
	got, err := testutil.Ask(from, network, addr)
	if err != nil {
		t.Errorf("%s %s from %s: %v", network, addr, from.Path(), err)
		return
	}
	if wantSource != "" && got != wantSource {
		t.Errorf("%s %s: server saw source %s, want %s", network, addr, got, wantSource)
	}
}

func expectNoAnswer(t *testing.T, from *testutil.NS, network, addr string) {
	t.Helper()
	if got, err := testutil.Ask(from, network, addr); err == nil {
		t.Errorf("%s %s answered (source %s); it must not", network, addr, got)
	}
}

// TestPublishedPortsAndMasquerade drives the whole Docker-style path
// through the binary: published ports from outside, from the host, from
// 127.0.0.1 and by hairpin; masquerade to the "internet"; port conflicts.
func TestPublishedPortsAndMasquerade(t *testing.T) {
	f := newFixture(t)
	up := testutil.NewUpstream(t, f.host)
	list := f.capList(nil, "10.60.0.0/24", "fd60::/64")
	srv, err := f.addWith(list, "srv", ports(
		port(8080, 80, "tcp", ""), port(8053, 53, "udp", ""), port(8081, 81, "tcp", "127.0.0.1")))
	if err != nil {
		t.Fatal(err)
	}
	cli := f.add(list, "cli")
	testutil.Serve(t, srv.ns, "tcp", ":80")
	testutil.Serve(t, srv.ns, "udp", ":53")
	testutil.Serve(t, srv.ns, "tcp", ":81")
	testutil.Serve(t, up.NS, "tcp", ":9000")
	gw := srv.gateway(true).String()

	t.Run("from outside", func(t *testing.T) {
		expectAnswer(t, up.NS, "tcp", "203.0.113.1:8080", up.IP4.String())
		expectAnswer(t, up.NS, "tcp", "[2001:db8:f::1]:8080", up.IP6.String())
		expectAnswer(t, up.NS, "udp", "203.0.113.1:8053", up.IP4.String())
		expectNoAnswer(t, up.NS, "tcp", "203.0.113.1:8081") // published on 127.0.0.1 only
	})
	t.Run("from the host", func(t *testing.T) {
		expectAnswer(t, f.host.NS, "tcp", "127.0.0.1:8080", "")
		expectAnswer(t, f.host.NS, "tcp", "127.0.0.1:8081", "")
		expectAnswer(t, f.host.NS, "tcp", "203.0.113.1:8080", "")
		expectAnswer(t, f.host.NS, "tcp", net.JoinHostPort(gw, "8080"), "")
	})
	t.Run("hairpin", func(t *testing.T) {
		expectAnswer(t, cli.ns, "tcp", net.JoinHostPort(gw, "8080"), "")
		expectAnswer(t, srv.ns, "tcp", net.JoinHostPort(gw, "8080"), "") // its own port
		expectAnswer(t, cli.ns, "tcp", "203.0.113.1:8080", "")
	})
	t.Run("masquerade", func(t *testing.T) {
		expectAnswer(t, cli.ns, "tcp", "203.0.113.2:9000", up.HostIP4.String())
		expectAnswer(t, cli.ns, "tcp", "[2001:db8:f::2]:9000", up.HostIP6.String())
		// Inside the network the source is kept.
		expectAnswer(t, cli.ns, "tcp", net.JoinHostPort(srv.ip(true).String(), "80"), cli.ip(true).String())
	})
	t.Run("conflict", func(t *testing.T) {
		before := f.host.AttachmentChains()
		dup, err := f.addWith(list, "dup", ports(port(8080, 80, "tcp", "")))
		cniErr(t, err, types.ErrInvalidNetworkConfig)
		if !strings.Contains(err.Error(), "8080") {
			t.Errorf("conflict error does not name the port: %v", err)
		}
		f.assertGone(dup)
		if after := f.host.AttachmentChains(); len(after) != len(before) {
			t.Errorf("chains changed by a refused ADD: %v -> %v", before, after)
		}
		expectAnswer(t, up.NS, "tcp", "203.0.113.1:8080", "")
	})
	if err := f.host.CNI.CheckNetworkList(context.Background(), list, srv.rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	f.del(list, srv)
	expectNoAnswer(t, up.NS, "tcp", "203.0.113.1:8080")
	f.del(list, cli)
	f.host.AssertNoLeaks()
	if r := f.reservations(); r != 0 {
		t.Errorf("%d reservations left", r)
	}
}

// TestIsolationBetweenNetworks: two nswire networks cannot reach each
// other, but a published port stays reachable across them.
func TestIsolationBetweenNetworks(t *testing.T) {
	f := newFixture(t)
	g := &fixture{t: t, host: f.host, name: testutil.Name("iso"), bridge: testutil.Name("bri"), ipam: f.ipam}
	testutil.NewUpstream(t, f.host)
	la, lb := f.capList(nil, "10.61.0.0/24"), g.capList(nil, "10.62.0.0/24")
	a := f.add(la, "a")
	b, err := g.addWith(lb, "b", ports(port(8090, 80, "tcp", "")))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, b.ns, "tcp", ":80")
	expectNoAnswer(t, a.ns, "tcp", net.JoinHostPort(b.ip(true).String(), "80"))
	expectAnswer(t, a.ns, "tcp", "203.0.113.1:8090", "")
	f.del(la, a)
	g.del(lb, b)
	f.host.AssertNoLeaks()
}

// TestAntiSpoofing: a container sending from an address it was not given
// is dropped; its own address works. Bridge mode checks in the bridge
// family, routed mode in inet prerouting; without the MAC check the
// address check still holds. DEL leaves no element behind.
func TestAntiSpoofing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]any
	}{
		{"bridge", nil},
		{"routed", map[string]any{"mode": "routed", "ipMasq": true}}, // routed mode does not masquerade by default
		{"no MAC check", map[string]any{"macSpoofCheck": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			up := testutil.NewUpstream(t, f.host)
			list := f.list("1.1.0", tc.extra, "10.63.0.0/24")
			c := f.add(list, "spoofer")
			testutil.Serve(t, up.NS, "tcp", ":9001")
			expectAnswer(t, c.ns, "tcp", "203.0.113.2:9001", "")
			eth := c.ns.Link("eth0")
			fake, _ := netlink.ParseAddr("10.63.0.200/24")
			if err := c.ns.Handle().AddrAdd(eth, fake); err != nil {
				t.Fatal(err)
			}
			var err error
			c.ns.Run(func() error {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: fake.IP}, Timeout: 1e9}
				conn, derr := d.Dial("tcp", "203.0.113.2:9001")
				if derr == nil {
					conn.Close()
				}
				err = derr
				return nil
			})
			if err == nil {
				t.Errorf("a connection from spoofed source %s went through", fake.IP)
			}
			if err := f.host.CNI.CheckNetworkList(context.Background(), list, c.rt); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			f.del(list, c)
			f.host.AssertNoLeaks()
		})
	}
}

// TestBandwidth: the bandwidth capability shapes the host veth, CHECK
// sees it, DEL removes every trace (including the ifb).
func TestBandwidth(t *testing.T) {
	f := newFixture(t)
	list := f.capList(nil, "10.64.0.0/24")
	bw := map[string]any{"bandwidth": map[string]any{"ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000}}
	c, err := f.addWith(list, "shaped", bw)
	if err != nil {
		t.Fatal(err)
	}
	qdiscs, err := f.host.Handle().QdiscList(f.host.Link(f.hostVeth(c)))
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, q := range qdiscs {
		kinds = append(kinds, q.Type())
	}
	if !strings.Contains(strings.Join(kinds, ","), "tbf") || !strings.Contains(strings.Join(kinds, ","), "ingress") {
		t.Errorf("host veth qdiscs %v, want tbf and ingress", kinds)
	}
	if err := f.host.CNI.CheckNetworkList(context.Background(), list, c.rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	bad := testutil.RT("bad-bw", testutil.NewNS(t), "eth0")
	bad.CapabilityArgs = map[string]any{"bandwidth": map[string]any{"ingressRate": 8000000}}
	_, err = f.host.CNI.AddNetworkList(context.Background(), list, bad)
	cniErr(t, err, types.ErrInvalidNetworkConfig)
	f.del(list, c)
	f.host.AssertNoLeaks()
}

// TestFirewallGCAndCheck: CHECK notices a missing nftables chain; GC removes
// the chains of attachments that are not valid.
func TestFirewallGCAndCheck(t *testing.T) {
	f := newFixture(t)
	list := f.capList(nil, "10.65.0.0/24")
	keep, err := f.addWith(list, "keep", ports(port(8100, 80, "tcp", "")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.addWith(list, "drop", ports(port(8101, 80, "tcp", ""))); err != nil {
		t.Fatal(err)
	}
	before := len(f.host.AttachmentChains())
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}}
	if err := f.host.CNI.GCNetworkList(context.Background(), list, args); err != nil {
		t.Fatal(err)
	}
	if after := len(f.host.AttachmentChains()); after != before/2 {
		t.Errorf("GC left %d attachment chains, want %d", after, before/2)
	}
	if err := f.host.CNI.CheckNetworkList(context.Background(), list, keep.rt); err != nil {
		t.Errorf("CHECK of the kept attachment: %v", err)
	}
	f.del(list, keep)
	f.host.AssertNoLeaks()
}
