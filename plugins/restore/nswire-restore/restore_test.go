package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/shaping"
	"github.com/nswire/nswire/pkg/testutil"
)

// scene is a host with what a firewall reload breaks: published ports
// (tcp and udp, on every address and on one, IPv4 and IPv6), masquerade
// to an upstream, two bridged networks isolated from each other and a
// routed one, anti-spoofing and shaping.
type scene struct {
	*fixture
	a, b, r            *network
	srv, cli, iso, rtd *container
	spoof              net.IP // an address cli holds but was not given
	limits             shaping.Limits
}

func newScene(t *testing.T) *scene {
	s := &scene{fixture: newFixture(t)}
	s.a = s.network(nil, "10.71.0.0/24", "fd71::/64")
	s.b = s.network(nil, "10.72.0.0/24")
	s.r = s.network(map[string]any{"mode": "routed", "ipMasq": true}, "10.73.0.0/24")
	s.limits = shaping.Limits{IngressRate: 80e6, IngressBurst: 8e6, EgressRate: 40e6, EgressBurst: 4e6}
	caps := ports(port(8080, 80, "tcp", ""), port(8053, 53, "udp", ""), port(8081, 81, "tcp", "203.0.113.1"))
	caps["bandwidth"] = map[string]any{"ingressRate": s.limits.IngressRate, "ingressBurst": s.limits.IngressBurst,
		"egressRate": s.limits.EgressRate, "egressBurst": s.limits.EgressBurst}
	s.srv = s.a.add("srv", caps)
	s.cli = s.a.add("cli", nil)
	s.iso = s.b.add("iso", nil)
	s.rtd = s.r.add("rtd", nil)
	testutil.Serve(t, s.srv.ns, "tcp", ":80")
	testutil.Serve(t, s.srv.ns, "udp", ":53")
	testutil.Serve(t, s.srv.ns, "tcp", ":81")
	testutil.Serve(t, s.up.NS, "tcp", ":9000")
	s.spoof = net.ParseIP("10.71.0.250")
	fake := &netlink.Addr{IPNet: &net.IPNet{IP: s.spoof, Mask: net.CIDRMask(24, 32)}, Flags: 0x02} // IFA_F_NODAD
	if err := s.cli.ns.Handle().AddrAdd(s.cli.ns.Link("eth0"), fake); err != nil {
		t.Fatal(err)
	}
	return s
}

// probe is one behaviour checked from outside.
type probe struct {
	name string
	run  func() error
}

func (s *scene) probes() []probe {
	ask := func(from *testutil.NS, network, addr, wantSource string) func() error {
		return func() error {
			got, err := testutil.Ask(from, network, addr)
			if err == nil && wantSource != "" && got != wantSource {
				err = fmt.Errorf("server saw source %s, want %s", got, wantSource)
			}
			return err
		}
	}
	refused := func(what string, dialErr error) error {
		if dialErr == nil {
			return errors.New(what + " went through")
		}
		return nil
	}
	up := s.up
	return []probe{
		{"published tcp", ask(up.NS, "tcp", "203.0.113.1:8080", up.IP4.String())},
		{"published tcp over IPv6", ask(up.NS, "tcp", "[2001:db8:f::1]:8080", up.IP6.String())},
		{"published udp", ask(up.NS, "udp", "203.0.113.1:8053", up.IP4.String())},
		{"published on one host address", ask(up.NS, "tcp", "203.0.113.1:8081", "")},
		{"masquerade", ask(s.cli.ns, "tcp", "203.0.113.2:9000", up.HostIP4.String())},
		{"masquerade in routed mode", ask(s.rtd.ns, "tcp", "203.0.113.2:9000", up.HostIP4.String())},
		{"isolation", func() error {
			return refused("a connection from another network", dial(s.iso.ns, nil, net.JoinHostPort(s.srv.ip4().String(), "80"), 300*time.Millisecond))
		}},
		{"anti-spoofing", func() error {
			return refused("a connection from a spoofed address", dial(s.cli.ns, s.spoof, "203.0.113.2:9000", 300*time.Millisecond))
		}},
		{"shaping", func() error { return shaping.Check(s.host.Handle(), s.srv.hostVeth(), s.limits) }},
	}
}

// expectWorking fails the test for each probe that fails, and for each
// container whose CHECK fails.
func (s *scene) expectWorking(t *testing.T) {
	t.Helper()
	for _, p := range s.probes() {
		if err := p.run(); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
	for _, c := range []*container{s.srv, s.cli, s.iso, s.rtd} {
		if err := c.check(); err != nil {
			t.Errorf("CHECK %s: %v", c.rt.ContainerID, err)
		}
	}
}

// expectBroken fails unless the named probe fails: the loss was real.
func (s *scene) expectBroken(t *testing.T, name string) {
	t.Helper()
	i := slices.IndexFunc(s.probes(), func(p probe) bool { return p.name == name })
	if err := s.probes()[i].run(); err == nil {
		t.Fatalf("%s still works after the loss", name)
	}
}

// loss is one way state disappears: apply does it from this process,
// nft (when set) is the same as an nft command, another process.
type loss struct {
	name    string
	breaks  string // a probe it breaks
	records bool   // it takes the network records
	nft     []string
	apply   func(t testing.TB, s *scene) error
}

var (
	inetNswire   = &nftables.Table{Name: "nswire", Family: nftables.TableFamilyINet}
	bridgeNswire = &nftables.Table{Name: "nswire", Family: nftables.TableFamilyBridge}
)

func nftLoss(name, breaks string, records bool, nft []string, do func(c *nftables.Conn)) loss {
	return loss{name: name, breaks: breaks, records: records, nft: nft, apply: func(t testing.TB, s *scene) error {
		c := s.nftConn(t)
		do(c)
		return c.Flush()
	}}
}

func flushSet(t *nftables.Table, name string) func(c *nftables.Conn) {
	return func(c *nftables.Conn) { c.FlushSet(&nftables.Set{Table: t, Name: name}) }
}

func losses() []loss {
	return []loss{
		nftLoss("ruleset flushed", "published tcp", true, []string{"flush", "ruleset"},
			func(c *nftables.Conn) { c.FlushRuleset() }),
		nftLoss("inet table deleted", "masquerade", true, []string{"delete", "table", "inet", "nswire"},
			func(c *nftables.Conn) { c.DelTable(inetNswire) }),
		nftLoss("bridge table deleted", "anti-spoofing", false, []string{"delete", "table", "bridge", "nswire"},
			func(c *nftables.Conn) { c.DelTable(bridgeNswire) }),
		nftLoss("inet table flushed", "published udp", true, []string{"flush", "table", "inet", "nswire"},
			func(c *nftables.Conn) { c.FlushTable(inetNswire) }),
		nftLoss("set dnat4any flushed", "published tcp", false, []string{"flush", "map", "inet", "nswire", "dnat4any"},
			flushSet(inetNswire, "dnat4any")),
		nftLoss("set masq4 flushed", "masquerade", false, []string{"flush", "set", "inet", "nswire", "masq4"},
			flushSet(inetNswire, "masq4")),
		nftLoss("set iso4 flushed", "isolation", false, []string{"flush", "set", "inet", "nswire", "iso4"},
			flushSet(inetNswire, "iso4")),
		nftLoss("bridge set guarded flushed", "anti-spoofing", false, []string{"flush", "set", "bridge", "nswire", "guarded"},
			flushSet(bridgeNswire, "guarded")),
		nftLoss("chain forward flushed", "isolation", false, []string{"flush", "chain", "inet", "nswire", "forward"},
			func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Table: inetNswire, Name: "forward"}) }),
		nftLoss("chain nat-pre deleted", "published tcp", false, []string{"flush chain inet nswire nat-pre; delete chain inet nswire nat-pre"},
			func(c *nftables.Conn) {
				c.FlushChain(&nftables.Chain{Table: inetNswire, Name: "nat-pre"})
				c.DelChain(&nftables.Chain{Table: inetNswire, Name: "nat-pre"})
			}),
		nftLoss("chain guard-pre flushed", "anti-spoofing", false, []string{"flush", "chain", "bridge", "nswire", "guard-pre"},
			func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Table: bridgeNswire, Name: "guard-pre"}) }),
		{name: "root qdisc deleted", breaks: "shaping", apply: func(t testing.TB, s *scene) error {
			return delQdisc(s, s.srv.hostVeth(), netlink.HANDLE_ROOT)
		}},
		{name: "ingress qdisc deleted", breaks: "shaping", apply: func(t testing.TB, s *scene) error {
			return delQdisc(s, s.srv.hostVeth(), netlink.HANDLE_INGRESS)
		}},
		{name: "ifb deleted", breaks: "shaping", apply: func(t testing.TB, s *scene) error {
			ifb, err := s.host.Handle().LinkByName(shaping.IfbName(s.srv.hostVeth()))
			if err != nil {
				return err
			}
			return s.host.Handle().LinkDel(ifb)
		}},
	}
}

func lossNamed(name string) loss {
	i := slices.IndexFunc(losses(), func(l loss) bool { return l.name == name })
	return losses()[i]
}

// delQdisc deletes the qdisc of link name under parent, as `tc qdisc del`.
func delQdisc(s *scene, name string, parent uint32) error {
	l, err := s.host.Handle().LinkByName(name)
	if err != nil {
		return err
	}
	qs, err := s.host.Handle().QdiscList(l)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if q.Attrs().Parent == parent {
			return s.host.Handle().QdiscDel(q)
		}
	}
	return fmt.Errorf("no qdisc under %x on %s", parent, name)
}

// TestRestoreOnce: after each loss, one pass brings everything back:
// traffic works, CHECK passes for every attachment, a second pass finds
// nothing to do, and a table of someone else's is untouched.
func TestRestoreOnce(t *testing.T) {
	s := newScene(t)
	s.expectWorking(t)
	if r := s.restore(t); r.Repaired() || r.Live != 4 {
		t.Fatalf("pass on an intact host: %+v", r)
	}
	var took []time.Duration
	for _, l := range losses() {
		t.Run(l.name, func(t *testing.T) {
			other := s.otherTable(t)
			if err := l.apply(t, s); err != nil {
				t.Fatalf("%s: %v", l.name, err)
			}
			s.expectBroken(t, l.breaks)
			start := time.Now()
			r := s.restore(t)
			took = append(took, time.Since(start))
			t.Logf("repaired in %s: %+v", r.Took, r)
			if !r.Repaired() {
				t.Errorf("nothing repaired")
			}
			if l.records && len(r.Records) != 3 {
				t.Errorf("records restored %v, want %s, %s and %s", r.Records, s.a.name, s.b.name, s.r.name)
			}
			s.expectWorking(t)
			if r := s.restore(t); r.Repaired() {
				t.Errorf("second pass repaired again: %+v", r)
			}
			if l.name != "ruleset flushed" {
				if after := s.otherTable(t); after != other {
					t.Errorf("table inet other changed:\n%s\nwas:\n%s", after, other)
				}
			}
		})
	}
	t.Logf("one-shot pass with repairs: %v", took)
}

// TestRecordsServeNextAdd: after a flush and a pass, an ADD of a network
// overlapping a restored one is refused (its record is back), and an ADD
// in the restored network works without a take-over.
func TestRecordsServeNextAdd(t *testing.T) {
	s := newScene(t)
	s.nft(t, "flush", "ruleset")
	s.restore(t)
	clash := s.network(nil, "10.71.0.0/25")
	if c, err := clash.tryAdd("clash", nil); err == nil {
		c.del()
		t.Fatalf("ADD overlapping a restored network's subnet succeeded")
	} else if !strings.Contains(err.Error(), s.a.name) {
		t.Errorf("refusal does not name %s: %v", s.a.name, err)
	}
	more := s.a.add("more", nil)
	s.expectWorking(t)
	if err := more.del(); err != nil {
		t.Fatal(err)
	}
}

// TestNotResurrected: an attachment whose host veth is gone (its
// container died without DEL) gets nothing back, and nothing is made for
// it.
func TestNotResurrected(t *testing.T) {
	s := newScene(t)
	dead := s.a.add("dead", ports(port(8090, 90, "tcp", "")))
	veth := dead.hostVeth()
	if err := s.host.Handle().LinkDel(s.host.Link(veth)); err != nil {
		t.Fatal(err)
	}
	s.nft(t, "flush", "ruleset")
	r := s.restore(t)
	if r.Gone != 1 || r.Live != 4 {
		t.Errorf("live %d, gone %d; want 4 and 1", r.Live, r.Gone)
	}
	for _, item := range append(r.Firewall, r.Shaping...) {
		if strings.Contains(item, "/dead/") {
			t.Errorf("dead attachment repaired: %s", item)
		}
	}
	if _, err := s.host.Handle().LinkByName(veth); err == nil {
		t.Errorf("host veth %s made again", veth)
	}
	for _, e := range s.host.PortElements() {
		if strings.HasSuffix(e, " "+veth) {
			t.Errorf("anti-spoofing element of the dead attachment: %s", e)
		}
	}
	if strings.Contains(s.nft(t, "list", "map", "inet", "nswire", "dnat4any"), "8090") {
		t.Errorf("the dead attachment's port 8090 is published again")
	}
	s.expectWorking(t)
}

// TestNetworkSettings: the network-level sets of every setting (icc off,
// nonMasqueradeCIDRs, internal, isolation changed while live) are checked
// as firewall.Add makes them: an intact host needs no repair, each set
// flushed comes back, and a network whose settings changed while it had
// containers gets its newest ADD's settings back.
func TestNetworkSettings(t *testing.T) {
	f := newFixture(t)
	x := f.network(map[string]any{"icc": false, "nonMasqueradeCIDRs": []string{"192.168.100.0/24", "fd99::/64"}},
		"10.76.0.0/24", "fd76::/64")
	y := f.network(map[string]any{"internal": true}, "10.77.0.0/24")
	z := f.network(nil, "10.78.0.0/24")
	x.add("x1", nil)
	x.add("x2", nil)
	y.add("y1", nil)
	z.add("z1", nil)
	z.write(map[string]any{"isolation": false}, "10.78.0.0/24")
	z2 := z.add("z2", nil)
	if r := f.restore(t); r.Repaired() {
		t.Fatalf("pass on an intact host repaired: %+v", r)
	}
	for _, set := range []string{"noicc4", "noicc6", "nomasq4", "nomasq6", "internal4", "intra6", "nets4", "iso4"} {
		f.nft(t, "flush", "set", "inet", "nswire", set)
		if r := f.restore(t); !r.Repaired() {
			t.Errorf("%s flushed: nothing repaired", set)
		}
		if r := f.restore(t); r.Repaired() {
			t.Errorf("%s flushed: a second pass repaired again: %+v", set, r)
		}
	}
	if strings.Contains(f.nft(t, "list", "set", "inet", "nswire", "iso4"), "10.78.0.0/24") {
		t.Errorf("network %s isolated again: its newest ADD turned isolation off", z.name)
	}
	f.nft(t, "flush", "ruleset")
	if r := f.restore(t); len(r.Records) != 3 {
		t.Errorf("records restored: %v", r.Records)
	}
	if rec := f.nft(t, "list", "chain", "inet", "nswire", "networks"); !strings.Contains(rec, "net "+z.name+" "+z.bridge+" masq,icc") {
		t.Errorf("record of %s does not carry its newest settings:\n%s", z.name, rec)
	}
	if err := z2.check(); err != nil {
		t.Errorf("CHECK %s: %v", z2.rt.ContainerID, err)
	}
}
