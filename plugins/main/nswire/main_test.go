package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/testutil"
)

// binDirs are where libcni finds plugins: ours first, then the reference.
var binDirs []string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithPlugins(m, func(bin, ref string) error {
		binDirs = []string{bin, ref}
		return nil
	}))
}

// fixture is one test's private host namespace and network.
type fixture struct {
	t      *testing.T
	host   *testutil.Host
	name   string
	bridge string
	ipam   string // ipam.type
}

// ipamTypes are the IPAM plugins every lifecycle test runs with: nswire's
// own (in-process) and the reference host-local (exec'd delegate).
var ipamTypes = []string{"nswire-ipam", "host-local"}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{t: t, host: testutil.NewHost(t, binDirs...), name: testutil.Name("net"), bridge: testutil.Name("br"), ipam: ipamTypes[0]}
}

// ipamConf is host-local over the given subnets, one range set each.
func (f *fixture) ipamConf(subnets ...string) map[string]any {
	var ranges []any
	for _, s := range subnets {
		ranges = append(ranges, []any{map[string]any{"subnet": s}})
	}
	return map[string]any{"type": f.ipam, "dataDir": f.host.DataDir, "ranges": ranges}
}

// plugin returns an nswire plugin config; extra keys override defaults.
func (f *fixture) plugin(extra map[string]any, subnets ...string) map[string]any {
	p := map[string]any{"name": f.name, "type": "nswire", "bridge": f.bridge, "ipam": f.ipamConf(subnets...)}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

func (f *fixture) list(version string, extra map[string]any, subnets ...string) *libcni.NetworkConfigList {
	return testutil.ConfList(f.t, version, f.plugin(extra, subnets...))
}

// container is one attachment made through libcni.
type container struct {
	ns  *testutil.NS
	rt  *libcni.RuntimeConf
	res *current.Result
}

func (f *fixture) add(list *libcni.NetworkConfigList, id string) *container {
	f.t.Helper()
	c := &container{ns: testutil.NewNS(f.t)}
	c.rt = testutil.RT(id, c.ns, "eth0")
	r, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt)
	if err != nil {
		f.t.Fatalf("ADD %s: %v", id, err)
	}
	c.res = testutil.Result(f.t, r)
	return c
}

func (f *fixture) del(list *libcni.NetworkConfigList, c *container) {
	f.t.Helper()
	if err := f.host.CNI.DelNetworkList(context.Background(), list, c.rt); err != nil {
		f.t.Fatalf("DEL %s: %v", c.rt.ContainerID, err)
	}
}

// ip returns the container's address of the given family.
func (c *container) ip(v4 bool) net.IP {
	if ipc := testutil.Family(c.res, v4); ipc != nil {
		return ipc.Address.IP
	}
	return nil
}

func (c *container) gateway(v4 bool) net.IP {
	if ipc := testutil.Family(c.res, v4); ipc != nil {
		return ipc.Gateway
	}
	return nil
}

// hostVeth is the host end's name for container c.
func (f *fixture) hostVeth(c *container) string {
	return link.HostVethName(ident.Attachment{Network: f.name, ContainerID: c.rt.ContainerID, IfName: c.rt.IfName})
}

// reservations counts the reservation files of the network (nswire-ipam
// keeps host-local's one-file-per-address layout).
func (f *fixture) reservations() int {
	entries, _ := os.ReadDir(filepath.Join(f.host.DataDir, f.name))
	n := 0
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			n++
		}
	}
	return n
}

// assertGone fails unless the host holds no veth or intent of c.
func (f *fixture) assertGone(c *container) {
	f.t.Helper()
	if _, err := f.host.Handle().LinkByName(f.hostVeth(c)); err == nil {
		f.t.Errorf("host veth %s of %s still exists", f.hostVeth(c), c.rt.ContainerID)
	}
	if f.hasIntent(c) {
		f.t.Errorf("intent of %s still exists", c.rt.ContainerID)
	}
}

// hasIntent reports whether c's intent file (pkg/intent) is there.
func (f *fixture) hasIntent(c *container) bool {
	ins, err := intent.Load(intent.Dir(f.host.DataDir, f.name))
	if err != nil {
		f.t.Fatalf("load intents: %v", err)
	}
	for _, in := range ins {
		if in.ContainerID == c.rt.ContainerID && in.IfName == c.rt.IfName {
			return true
		}
	}
	return false
}

// assertWired checks, by netlink, what ADD must have left in the kernel,
// and its intent file.
func (f *fixture) assertWired(c *container, mtu int) {
	f.t.Helper()
	if !f.hasIntent(c) {
		f.t.Errorf("no intent file for %s", c.rt.ContainerID)
	}
	br, ok := f.host.Link(f.bridge).(*netlink.Bridge)
	if !ok || br.Flags&net.FlagUp == 0 {
		f.t.Fatalf("bridge %s missing or down", f.bridge)
	}
	hv := f.host.Link(f.hostVeth(c))
	if hv.Attrs().MasterIndex != br.Index || hv.Attrs().Flags&net.FlagUp == 0 {
		f.t.Errorf("host veth %s: master %d (want %d), flags %v", hv.Attrs().Name, hv.Attrs().MasterIndex, br.Index, hv.Attrs().Flags)
	}
	eth := c.ns.Link("eth0")
	if eth.Attrs().MTU != mtu || eth.Attrs().Flags&net.FlagUp == 0 {
		f.t.Errorf("eth0: mtu %d (want %d), flags %v", eth.Attrs().MTU, mtu, eth.Attrs().Flags)
	}
	if c.ns.Link("lo").Attrs().Flags&net.FlagUp == 0 {
		f.t.Errorf("lo is down in the container")
	}
	addrs, err := c.ns.Handle().AddrList(eth, netlink.FAMILY_ALL)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, ipc := range c.res.IPs {
		found := false
		for _, a := range addrs {
			if a.IPNet.String() == ipc.Address.String() {
				found = true
				if a.Flags&0x40 != 0 { // IFA_F_TENTATIVE
					f.t.Errorf("%s is tentative: DAD would delay traffic", a.IPNet)
				}
			}
		}
		if !found {
			f.t.Errorf("eth0 lacks %s (has %v)", ipc.Address.String(), addrs)
		}
		gws, _ := f.host.Handle().AddrList(br, netlink.FAMILY_ALL)
		if !hasIP(gws, ipc.Gateway) {
			f.t.Errorf("bridge lacks gateway %s", ipc.Gateway)
		}
	}
	if c.ip(false) == nil {
		// IPv4 only: no IPv6 at all, not even link-local (whose MLD and
		// router solicitations the bridge would flood to every port).
		if v6, _ := c.ns.Handle().AddrList(eth, netlink.FAMILY_V6); len(v6) > 0 {
			f.t.Errorf("IPv4-only eth0 holds IPv6 addresses %v", v6)
		}
	}
	routes, _ := c.ns.Handle().RouteList(eth, netlink.FAMILY_ALL)
	for _, v4 := range []bool{true, false} {
		if c.ip(v4) != nil && !hasDefaultVia(routes, c.gateway(v4)) {
			f.t.Errorf("no default route via %s in %v", c.gateway(v4), routes)
		}
	}
}

func hasIP(addrs []netlink.Addr, ip net.IP) bool {
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func hasDefaultVia(routes []netlink.Route, gw net.IP) bool {
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(gw) {
			return true
		}
	}
	return false
}

// cniErr asserts err is a CNI error with the given code.
func cniErr(t *testing.T, err error, code uint) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected CNI error %d, got success", code)
	}
	if got := testutil.ErrCode(err); got != code {
		t.Fatalf("expected CNI error %d, got %d: %v", code, got, err)
	}
}

var _ = types.ErrInternal
