package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/testutil"
)

// TestLifecycleEveryVersion drives ADD, CHECK, DEL through libcni at every
// cniVersion, with IPv4, IPv6 and dual-stack, and checks kernel state and
// real traffic between two containers and to the gateway.
func TestLifecycleEveryVersion(t *testing.T) {
	stacks := map[string][]string{
		"v4":   {"10.10.0.0/24"},
		"v6":   {"fd10::/64"},
		"dual": {"10.10.0.0/24", "fd10::/64"},
	}
	for _, v := range testutil.Versions {
		for stack, subnets := range stacks {
			for _, ipamType := range ipamTypes {
				t.Run(v+"/"+stack+"/"+ipamType, func(t *testing.T) {
					t.Parallel()
					f := newFixture(t)
					f.ipam = ipamType
					list := f.list(v, map[string]any{"mtu": 1400}, subnets...)
					a, b := f.add(list, "a"), f.add(list, "b")
					f.assertWired(a, 1400)
					f.assertWired(b, 1400)
					for _, v4 := range []bool{true, false} {
						if a.ip(v4) == nil {
							continue
						}
						if err := testutil.Connect(a.ns, b.ns, b.ip(v4)); err != nil {
							t.Errorf("a -> b %s: %v", b.ip(v4), err)
						}
						if err := testutil.Connect(b.ns, f.host.NS, a.gateway(v4)); err != nil {
							t.Errorf("b -> gateway %s: %v", a.gateway(v4), err)
						}
					}
					if testutil.Supports(v, "CHECK") {
						if err := f.host.CNI.CheckNetworkList(context.Background(), list, a.rt); err != nil {
							t.Errorf("CHECK right after ADD: %v", err)
						}
					}
					for _, c := range []*container{a, b} {
						f.del(list, c)
						f.del(list, c) // DEL twice converges
						f.assertGone(c)
					}
					if n := f.reservations(); n != 0 {
						t.Errorf("%d reservations left after DEL", n)
					}
				})
			}
		}
	}
}

// TestResultShape checks the printed result: interfaces, sandbox, ip
// interface index, routes, dns from config and the dns capability.
func TestResultShape(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", map[string]any{
		"dns":          map[string]any{"nameservers": []string{"10.11.0.53"}},
		"capabilities": map[string]bool{"dns": true},
	}, "10.11.0.0/24")
	c := f.add(list, "shape")
	r := c.res
	if len(r.Interfaces) != 3 || r.Interfaces[0].Name != f.bridge || r.Interfaces[1].Name != f.hostVeth(c) ||
		r.Interfaces[2].Name != "eth0" || r.Interfaces[2].Sandbox != c.ns.Path() {
		t.Fatalf("interfaces: %+v", r.Interfaces)
	}
	if r.Interfaces[2].Mac != c.ns.Link("eth0").Attrs().HardwareAddr.String() {
		t.Errorf("result MAC %s differs from the kernel's", r.Interfaces[2].Mac)
	}
	if *r.IPs[0].Interface != 2 || r.IPs[0].Gateway.String() != "10.11.0.1" {
		t.Errorf("ip: %+v", r.IPs[0])
	}
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("routes: %+v", r.Routes)
	}
	if len(r.DNS.Nameservers) != 1 || r.DNS.Nameservers[0] != "10.11.0.53" {
		t.Errorf("dns: %+v", r.DNS)
	}
	f.del(list, c)

	c2 := testutil.NewNS(t)
	rt := testutil.RT("dnscap", c2, "eth0")
	rt.CapabilityArgs = map[string]any{"dns": map[string]any{"servers": []string{"10.11.0.54"}, "searches": []string{"example.test"}}}
	res, err := f.host.CNI.AddNetworkList(context.Background(), list, rt)
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.Result(t, res).DNS; len(d.Nameservers) != 1 || d.Nameservers[0] != "10.11.0.54" || d.Search[0] != "example.test" {
		t.Errorf("dns capability ignored: %+v", d)
	}
	if err := f.host.CNI.DelNetworkList(context.Background(), list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestMACAndMTU covers the mac capability, args.cni.mac, CNI_ARGS MAC and
// the configured MTU on both ends.
func TestMACAndMTU(t *testing.T) {
	f := newFixture(t)
	cases := map[string]func(*libcni.RuntimeConf) map[string]any{
		"capability": func(rt *libcni.RuntimeConf) map[string]any {
			rt.CapabilityArgs = map[string]any{"mac": "02:00:00:aa:bb:01"}
			return map[string]any{"capabilities": map[string]bool{"mac": true}}
		},
		"args": func(rt *libcni.RuntimeConf) map[string]any {
			return map[string]any{"args": map[string]any{"cni": map[string]any{"mac": "02:00:00:aa:bb:02"}}}
		},
		"cni_args": func(rt *libcni.RuntimeConf) map[string]any {
			rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", "02:00:00:aa:bb:03"}}
			return nil
		},
	}
	want := map[string]string{"capability": "02:00:00:aa:bb:01", "args": "02:00:00:aa:bb:02", "cni_args": "02:00:00:aa:bb:03"}
	for name, setup := range cases {
		cns := testutil.NewNS(t)
		rt := testutil.RT(name, cns, "eth0")
		extra := setup(rt)
		if extra == nil {
			extra = map[string]any{}
		}
		extra["mtu"] = 1280
		list := f.list("1.0.0", extra, "10.12.0.0/24")
		res, err := f.host.CNI.AddNetworkList(context.Background(), list, rt)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		eth := cns.Link("eth0")
		if eth.Attrs().HardwareAddr.String() != want[name] || eth.Attrs().MTU != 1280 {
			t.Errorf("%s: mac %s mtu %d", name, eth.Attrs().HardwareAddr, eth.Attrs().MTU)
		}
		if got := testutil.Result(t, res).Interfaces[2].Mac; got != want[name] {
			t.Errorf("%s: result mac %s", name, got)
		}
		if mtu := f.host.Link(testutilHostVeth(f, name)).Attrs().MTU; mtu != 1280 {
			t.Errorf("%s: host veth mtu %d", name, mtu)
		}
		if err := f.host.CNI.DelNetworkList(context.Background(), list, rt); err != nil {
			t.Fatal(err)
		}
	}
}

func testutilHostVeth(f *fixture, id string) string {
	return f.hostVeth(&container{rt: &libcni.RuntimeConf{ContainerID: id, IfName: "eth0"}})
}

// TestRoutedMode: no bridge; the host end answers as gateway and routes to
// each container; containers reach each other through the host.
func TestRoutedMode(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", map[string]any{"mode": "routed"}, "10.13.0.0/24", "fd13::/64")
	a, b := f.add(list, "ra"), f.add(list, "rb")
	if _, err := f.host.Handle().LinkByName(f.bridge); err == nil {
		t.Errorf("routed mode created bridge %s", f.bridge)
	}
	for _, v4 := range []bool{true, false} {
		if err := testutil.Connect(a.ns, b.ns, b.ip(v4)); err != nil {
			t.Errorf("a -> b (%s): %v", b.ip(v4), err)
		}
		if err := testutil.Connect(f.host.NS, a.ns, a.ip(v4)); err != nil {
			t.Errorf("host -> a (%s): %v", a.ip(v4), err)
		}
	}
	if len(a.res.Interfaces) != 2 || a.res.Interfaces[1].Sandbox == "" {
		t.Errorf("routed interfaces: %+v", a.res.Interfaces)
	}
	if err := f.host.CNI.CheckNetworkList(context.Background(), list, a.rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	f.del(list, a)
	f.del(list, b)
	f.assertGone(a)
	f.assertGone(b)
}

// TestParallelAdds runs 50 ADDs then 50 DELs at once on one network.
func TestParallelAdds(t *testing.T) {
	for _, ipamType := range ipamTypes {
		t.Run(ipamType, func(t *testing.T) {
			f := newFixture(t)
			f.ipam = ipamType
			parallelAdds(t, f)
		})
	}
}

func parallelAdds(t *testing.T, f *fixture) {
	list := f.list("1.1.0", nil, "10.14.0.0/24", "fd14::/64")
	const n = 50
	cs := make([]*container, n)
	for i := range cs {
		cs[i] = &container{ns: testutil.NewNS(t)}
		cs[i].rt = testutil.RT("par"+string(rune('a'+i/26))+string(rune('a'+i%26)), cs[i].ns, "eth0")
	}
	parallel(t, cs, func(c *container) error {
		r, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt)
		if err == nil {
			c.res = testutil.Result(t, r)
		}
		return err
	})
	seen := map[string]bool{}
	for _, c := range cs {
		for _, ipc := range c.res.IPs {
			if seen[ipc.Address.IP.String()] {
				t.Errorf("address %s given twice", ipc.Address.IP)
			}
			seen[ipc.Address.IP.String()] = true
		}
	}
	if err := testutil.Connect(cs[0].ns, cs[n-1].ns, cs[n-1].ip(true)); err != nil {
		t.Errorf("first -> last: %v", err)
	}
	parallel(t, cs, func(c *container) error {
		return f.host.CNI.DelNetworkList(context.Background(), list, c.rt)
	})
	for _, name := range f.host.Links() {
		if strings.HasPrefix(name, "nsw") {
			t.Errorf("leftover link %s", name)
		}
	}
	if r := f.reservations(); r != 0 {
		t.Errorf("%d reservations left", r)
	}
}

func parallel(t *testing.T, cs []*container, op func(*container) error) {
	var wg sync.WaitGroup
	errs := make(chan error, len(cs))
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := op(c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestDelWithoutNetns: the runtime may call DEL after the netns is gone.
func TestDelWithoutNetns(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.15.0.0/24")
	c := f.add(list, "gone")
	rt := *c.rt
	rt.NetNS = "/run/netns/does-not-exist"
	if err := f.host.CNI.DelNetworkList(context.Background(), list, &rt); err != nil {
		t.Fatalf("DEL with missing netns: %v", err)
	}
	f.assertGone(c)
	if r := f.reservations(); r != 0 {
		t.Errorf("%d reservations left", r)
	}
	// DEL of an attachment ADD never made succeeds too.
	rt.ContainerID = "never-added"
	if err := f.host.CNI.DelNetworkList(context.Background(), list, &rt); err != nil {
		t.Errorf("DEL of unknown attachment: %v", err)
	}
}

// TestDelIgnoresBadArgs: a runtime sends DEL the same arguments as ADD
// (containerd recomputes them from the pod), so an argument ADD would
// refuse must not stop the teardown: DEL removes everything of the
// attachment from its identity alone. GC and STATUS ignore them too.
func TestDelIgnoresBadArgs(t *testing.T) {
	f := newFixture(t)
	caps := map[string]bool{"portMappings": true, "bandwidth": true, "mac": true, "ips": true}
	list := f.list("1.1.0", map[string]any{"capabilities": caps}, "10.15.1.0/24")
	good := map[string]any{
		"portMappings": []any{port(18080, 80, "tcp", "")},
		"bandwidth":    map[string]any{"ingressRate": 1_000_000, "ingressBurst": 1<<32 - 1, "egressRate": 1_000_000, "egressBurst": 1<<32 - 1},
	}
	c, err := f.addWith(list, "badargs", good)
	if err != nil {
		t.Fatalf("ADD with containerd's bandwidth arguments: %v", err)
	}
	rt := *c.rt
	rt.CapabilityArgs = map[string]any{
		"portMappings": []any{port(0, 80, "icmp", "nope")},
		"bandwidth":    map[string]any{"ingressRate": 1000},
		"mac":          "01:00:5e:00:00:01",
		"ips":          []any{"10.15.1.300"},
	}
	rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", "zz"}, {"IP", "nope"}}
	if _, err := f.host.CNI.AddNetworkList(context.Background(), list, &rt); err == nil {
		t.Fatal("ADD accepted the bad arguments")
	}
	if err := f.host.CNI.GCNetworkList(context.Background(), list, &libcni.GCArgs{
		ValidAttachments: []types.GCAttachment{{ContainerID: rt.ContainerID, IfName: rt.IfName}}}); err != nil {
		t.Errorf("GC: %v", err)
	}
	if err := f.host.CNI.DelNetworkList(context.Background(), list, &rt); err != nil {
		t.Fatalf("DEL with arguments ADD refuses: %v", err)
	}
	f.assertGone(c)
	f.host.AssertNoLeaks()
	if r := f.reservations(); r != 0 {
		t.Errorf("%d reservations left", r)
	}
}

// TestGC keeps valid attachments and removes the rest, never touching
// another network's links. It also removes a host end that a killed ADD
// left before marking it (nswire's group, no alias, on the bridge), which
// libcni's cache does not know.
func TestGC(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.16.0.0/24")
	keep, drop1, drop2 := f.add(list, "keep"), f.add(list, "drop1"), f.add(list, "drop2")
	halfMade := f.halfMadeVeth()
	other := &fixture{t: t, host: f.host, name: testutil.Name("other"), bridge: testutil.Name("bro"), ipam: f.ipam}
	otherList := other.list("1.1.0", nil, "10.17.0.0/24")
	o := other.add(otherList, "drop1") // same container ID, other network
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}}
	if err := f.host.CNI.GCNetworkList(context.Background(), list, args); err != nil {
		t.Fatalf("GC: %v", err)
	}
	f.assertGone(drop1)
	f.assertGone(drop2)
	if _, err := f.host.Handle().LinkByName(halfMade); err == nil {
		t.Errorf("half-made host veth %s still exists", halfMade)
	}
	f.host.Link(f.hostVeth(keep))
	other.host.Link(other.hostVeth(o))
	if err := testutil.Connect(keep.ns, f.host.NS, keep.gateway(true)); err != nil {
		t.Errorf("kept attachment lost traffic: %v", err)
	}
	if r := f.reservations(); r != 1 {
		t.Errorf("%d reservations after GC, want 1", r)
	}
	f.del(list, keep)
	other.del(otherList, o)
}

// halfMadeVeth makes, in the host namespace, what an ADD killed between
// creating the pair and marking the host end leaves: a veth in nswire's
// group on the network's bridge, without alias.
func (f *fixture) halfMadeVeth() string {
	f.t.Helper()
	name := testutil.Name("nswh")
	h := f.host.Handle()
	br := f.host.Link(f.bridge)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index, Group: link.OwnerGroup}, PeerName: name + "p"}
	if err := h.LinkAdd(v); err != nil {
		f.t.Fatalf("half-made veth: %v", err)
	}
	f.t.Cleanup(func() { _ = h.LinkDel(v) })
	return name
}

// TestStatus: 0 for a valid config, 50 for an invalid one.
func TestStatus(t *testing.T) {
	f := newFixture(t)
	if err := f.host.CNI.GetStatusNetworkList(context.Background(), f.list("1.1.0", nil, "10.18.0.0/24")); err != nil {
		t.Errorf("STATUS of a valid network: %v", err)
	}
	bad := f.list("1.1.0", map[string]any{"mode": "sideways"}, "10.18.0.0/24")
	cniErr(t, f.host.CNI.GetStatusNetworkList(context.Background(), bad), types.ErrPluginNotAvailable)
}

// TestLogFile: one structured line per verb, with step timings.
func TestLogFile(t *testing.T) {
	f := newFixture(t)
	logFile := t.TempDir() + "/nswire.log"
	list := f.list("1.1.0", map[string]any{"logFile": logFile}, "10.19.0.0/24")
	c := f.add(list, "logged")
	f.del(list, c)
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines, got %d:\n%s", len(lines), raw)
	}
	var rec struct {
		Msg, ContainerID, Network string
		Steps                     map[string]any
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Msg != "ADD" || rec.ContainerID != "logged" || rec.Network != f.name || rec.Steps["veth"] == nil {
		t.Errorf("log line: %s", lines[0])
	}
}

var _ = net.IPv4len

// TestAnnounceAndHairpin: the kernel announces the container's MAC when
// eth0 comes up (the bridge learns it with no traffic from us), and
// hairpinMode sets the port flag.
func TestAnnounceAndHairpin(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", map[string]any{"hairpinMode": true}, "10.20.0.0/24", "fd20::/64")
	c := f.add(list, "announce")
	hv := f.host.Link(f.hostVeth(c))
	mac := c.ns.Link("eth0").Attrs().HardwareAddr.String()
	learned := false
	for range 50 {
		fdb, err := f.host.Handle().NeighList(hv.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range fdb {
			learned = learned || e.HardwareAddr.String() == mac
		}
		if learned {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !learned {
		t.Errorf("bridge never learned %s: no gratuitous ARP / unsolicited NA on link up", mac)
	}
	for key, want := range map[string]string{"ipv4/conf/eth0/arp_notify": "1", "ipv6/conf/eth0/ndisc_notify": "1", "ipv6/conf/eth0/accept_dad": "0"} {
		c.ns.Run(func() error {
			got, err := os.ReadFile("/proc/sys/net/" + key)
			if strings.TrimSpace(string(got)) != want {
				t.Errorf("%s = %q, want %s (%v)", key, got, want, err)
			}
			return nil
		})
	}
	info, err := f.host.Handle().LinkGetProtinfo(hv)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Hairpin {
		t.Errorf("hairpinMode not set on %s", hv.Attrs().Name)
	}
	f.del(list, c)
}

// TestVersion: VERSION lists exactly the versions nswire supports.
func TestVersion(t *testing.T) {
	f := newFixture(t)
	info, err := f.host.CNI.GetVersionInfo(context.Background(), "nswire")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(info.SupportedVersions(), ","); got != strings.Join(testutil.Versions, ",") {
		t.Errorf("VERSION: %s", got)
	}
}
