package e2e

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
	"github.com/nswire/nswire/pkg/testutil"
)

// exampleConf is a copy of one conf/*.conflist made unique to a test:
// network name, bridge, subnets and IPAM dataDir rewritten.
type exampleConf struct {
	name, bridge, version string
	routed                bool
	caps                  map[string]bool
	subnets               []*net.IPNet
	dataDir               string
	raw                   []byte
}

// loadExample rewrites conf file src; idx makes its subnets unique
// (10.180+idx.k.0/len and fd00:e2e:idx:k::/len for range set k).
func loadExample(t *testing.T, src string, idx int, dataDir string) *exampleConf {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	c := &exampleConf{name: testutil.Name("e2e-" + strings.TrimSuffix(filepath.Base(src), ".conflist")), dataDir: dataDir, caps: map[string]bool{}}
	c.version, _ = list["cniVersion"].(string)
	list["name"] = c.name
	plugins, _ := list["plugins"].([]any)
	for _, p := range plugins {
		pm := p.(map[string]any)
		if pm["type"] != "nswire" {
			continue
		}
		c.routed = pm["mode"] == "routed"
		if !c.routed {
			c.bridge = testutil.Name("e2ebr")
			pm["bridge"] = c.bridge
		}
		if caps, ok := pm["capabilities"].(map[string]any); ok {
			for k, v := range caps {
				c.caps[k] = v == true
			}
		}
		ipam := pm["ipam"].(map[string]any)
		ipam["dataDir"] = dataDir
		sets, _ := ipam["ranges"].([]any)
		for k, set := range sets {
			for _, r := range set.([]any) {
				c.remapRange(t, r.(map[string]any), idx, k)
			}
		}
	}
	if c.raw, err = json.MarshalIndent(list, "", "  "); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *exampleConf) remapRange(t *testing.T, r map[string]any, idx, k int) {
	t.Helper()
	_, old, err := net.ParseCIDR(r["subnet"].(string))
	if err != nil {
		t.Fatalf("subnet: %v", err)
	}
	ones, bits := old.Mask.Size()
	var base net.IP
	if bits == 32 {
		base = net.IPv4(10, byte(180+idx), byte(k), 0).To4()
		if ones < 16 {
			t.Fatalf("subnet %s is too large to remap", old)
		}
	} else {
		base = net.ParseIP(fmt.Sprintf("fd00:e2e:%x:%x::", idx, k))
		if ones < 64 {
			t.Fatalf("subnet %s is too large to remap", old)
		}
	}
	nw := &net.IPNet{IP: base.Mask(old.Mask), Mask: old.Mask}
	c.subnets = append(c.subnets, nw)
	r["subnet"] = nw.String()
	for _, key := range []string{"gateway", "rangeStart", "rangeEnd"} {
		if s, ok := r[key].(string); ok {
			r[key] = hostIn(nw, net.ParseIP(s)).String()
		}
	}
}

// hostIn keeps the host part of ip and puts it in subnet n.
func hostIn(n *net.IPNet, ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil && len(n.IP) == 4 {
		ip = v4
	}
	out := make(net.IP, len(n.IP))
	for i := range out {
		out[i] = n.IP[i] | ip[i]&^n.Mask[i]
	}
	return out
}

// staticIPs are the addresses asked for with the ips capability: host
// part 0x32 (.50 / ::32) of every subnet.
func (c *exampleConf) staticIPs() []string {
	var out []string
	for _, s := range c.subnets {
		ones, _ := s.Mask.Size()
		ip := hostIn(s, net.ParseIP("::32"))
		if s.IP.To4() != nil {
			ip = hostIn(s, net.ParseIP("0.0.0.50"))
		}
		out = append(out, fmt.Sprintf("%s/%d", ip, ones))
	}
	return out
}

// cniTool runs cnitool inside a private host namespace with a private
// libcni cache: cnitool v1.3.1 has no cache-dir setting (it calls
// libcni.NewCNIConfig(path, nil): /var/lib/cni), so each run gets its own
// mount namespace with cacheDir bind-mounted on /var/lib/cni.
type cniTool struct {
	host     *testutil.Host
	confDir  string
	cniPath  string
	cacheDir string
}

func (c *cniTool) run(verb, network, netns, capArgs string) (string, error) {
	env := []string{"NETCONFPATH=" + c.confDir, "CNI_PATH=" + c.cniPath}
	if capArgs != "" {
		env = append(env, "CAP_ARGS="+capArgs)
	}
	// Go makes / private (MS_REC|MS_PRIVATE) in the new mount namespace.
	attr := &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	return execInAttr(c.host.NetNS, env, attr, "/bin/sh", "-c", `mount --bind "$0" /var/lib/cni && exec "$@"`,
		c.cacheDir, cnitool, verb, network, netns)
}

// containerID is the one cnitool derives from the netns path.
func cnitoolID(netns string) string {
	abs, _ := filepath.Abs(netns)
	s := sha512.Sum512([]byte(abs))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// TestCnitool drives every conf/*.conflist through cnitool: STATUS, ADD
// with CAP_ARGS (ports, ips, mac, bandwidth, as far as the conf declares
// them), traffic and published ports, CHECK, DEL, then GC of an
// attachment cnitool's cache does not know, DEL again, STATUS.
func TestCnitool(t *testing.T) {
	confs, err := filepath.Glob(filepath.Join(repo, "conf", "*.conflist"))
	if err != nil || len(confs) == 0 {
		t.Fatalf("no conf/*.conflist: %v", err)
	}
	for i, src := range confs {
		t.Run(filepath.Base(src), func(t *testing.T) {
			t.Parallel()
			cnitoolLifecycle(t, src, i)
		})
	}
}

const (
	publishedPort = 8080 // host side
	servicePort   = 80   // in the container
)

func cnitoolLifecycle(t *testing.T, src string, idx int) {
	lk := newLeaks(t)
	h := lk.host()
	c := loadExample(t, src, idx, h.DataDir)
	lk.network(c.name, h.DataDir)
	confDir, cacheDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, filepath.Base(src)), c.raw, 0o644); err != nil {
		t.Fatal(err)
	}
	tool := &cniTool{host: h, confDir: confDir, cniPath: binDir, cacheDir: cacheDir}

	if _, err := tool.run("status", c.name, "/dev/null", ""); err != nil {
		t.Fatalf("cnitool status: %v", err)
	}
	a, b := lk.ns(), lk.ns()
	mac := fmt.Sprintf("02:e2:e0:00:00:%02x", idx)
	bw := map[string]uint64{"ingressRate": 8_000_000, "ingressBurst": 800_000, "egressRate": 16_000_000, "egressBurst": 1_600_000}
	capsJSON, _ := json.Marshal(map[string]any{
		"portMappings": []map[string]any{{"hostPort": publishedPort, "containerPort": servicePort, "protocol": "tcp"}},
		"ips":          c.staticIPs(),
		"mac":          mac,
		"bandwidth":    bw,
	})
	caps := string(capsJSON)

	out, err := tool.run("add", c.name, a.Path(), caps)
	if err != nil {
		t.Fatalf("cnitool add a: %v", err)
	}
	resA := parseResult(t, out)
	idA := cnitoolID(a.Path())
	vethA := link.HostVethName(ident.Attachment{Network: c.name, ContainerID: idA, IfName: "eth0"})
	assertAttached(t, h, c, a, resA, idA)
	if c.caps["mac"] {
		if got := a.Link("eth0").Attrs().HardwareAddr.String(); got != mac {
			t.Errorf("mac capability: eth0 has %s, want %s", got, mac)
		}
	}
	if c.caps["ips"] {
		have := addrsOf(t, a, "eth0")
		for _, want := range c.staticIPs() {
			if c.routed {
				want = strings.Split(want, "/")[0] + map[bool]string{true: "/32", false: "/128"}[strings.Contains(want, ".")]
			}
			if !slices.Contains(have, want) {
				t.Errorf("ips capability: eth0 lacks %s (has %v)", want, have)
			}
		}
	}
	if c.caps["bandwidth"] {
		assertShaped(t, h, vethA, bw)
	}
	if rs := nftRuleset(t, h.NetNS); c.caps["portMappings"] && !strings.Contains(rs, fmt.Sprintf("%q", c.name+"/"+idA+"/eth0")) {
		t.Errorf("no nftables element carries attachment %s/%s/eth0:\n%s", c.name, idA, rs)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "results", c.name+"-"+idA+"-eth0")); err != nil {
		t.Errorf("cnitool did not cache the result in its private cache: %v", err)
	}

	out, err = tool.run("add", c.name, b.Path(), "")
	if err != nil {
		t.Fatalf("cnitool add b: %v", err)
	}
	resB := parseResult(t, out)
	idB := cnitoolID(b.Path())
	assertAttached(t, h, c, b, resB, idB)

	serve(t, a, servicePort, "a")
	serve(t, b, servicePort, "b")
	for _, ipc := range resB.IPs {
		expectTag(t, "a -> b", a, ipc.Address.IP, servicePort, "b")
	}
	for _, ipc := range resA.IPs {
		expectTag(t, "b -> a", b, ipc.Address.IP, servicePort, "a")
	}
	if c.caps["portMappings"] {
		checkPublished(t, c, h, b, resA, "a")
	}

	for _, x := range []struct {
		ns   *testutil.NS
		caps string
	}{{a, caps}, {b, ""}} {
		if _, err := tool.run("check", c.name, x.ns.Path(), x.caps); err != nil {
			t.Errorf("cnitool check: %v", err)
		}
	}

	// DEL b: b is gone, a keeps working.
	if _, err := tool.run("del", c.name, b.Path(), ""); err != nil {
		t.Fatalf("cnitool del b: %v", err)
	}
	if _, err := h.Handle().LinkByName(link.HostVethName(ident.Attachment{Network: c.name, ContainerID: idB, IfName: "eth0"})); err == nil {
		t.Errorf("host veth of b survived DEL")
	}
	if n := reservations(h.DataDir, c.name); n != len(resA.IPs) {
		t.Errorf("%d reservations after DEL of b, want %d (a's)", n, len(resA.IPs))
	}
	if c.caps["portMappings"] {
		checkPublished(t, c, h, h.NS, resA, "a")
	}
	if _, err := tool.run("check", c.name, a.Path(), caps); err != nil {
		t.Errorf("cnitool check a after DEL of b: %v", err)
	}

	// An attachment whose runtime lost its cache: only GC can find it.
	lost := lk.ns()
	lostTool := *tool
	lostTool.cacheDir = t.TempDir()
	portsOnly, _ := json.Marshal(map[string]any{"portMappings": []map[string]any{{"hostPort": publishedPort, "containerPort": servicePort}}})
	_, err = lostTool.run("add", c.name, lost.Path(), string(portsOnly))
	if c.caps["portMappings"] {
		if err == nil {
			t.Errorf("second ADD publishing host port %d succeeded: port conflict not detected", publishedPort)
		} else {
			lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
			t.Logf("conflicting port refused: %s", lines[len(lines)-1])
			if l := lost.Links(); len(l) != 1 {
				t.Errorf("refused ADD left links in the container: %v", l)
			}
			_, err = lostTool.run("add", c.name, lost.Path(), "")
		}
	}
	if err != nil {
		t.Fatalf("cnitool add (lost cache): %v", err)
	}
	vethLost := link.HostVethName(ident.Attachment{Network: c.name, ContainerID: cnitoolID(lost.Path()), IfName: "eth0"})
	h.Link(vethLost)

	// cnitool gc passes no valid attachments: libcni DELs every cached
	// attachment (a), then nswire's GC removes the rest (lost).
	if _, err := tool.run("gc", c.name, "/dev/null", ""); err != nil {
		t.Fatalf("cnitool gc: %v", err)
	}
	for _, v := range []string{vethA, vethLost} {
		if _, err := h.Handle().LinkByName(v); err == nil {
			t.Errorf("host veth %s survived GC", v)
		}
	}
	if _, err := h.Handle().LinkByName(shaping.IfbName(vethA)); err == nil {
		t.Errorf("ifb %s survived GC", shaping.IfbName(vethA))
	}
	assertHostClean(t, h, c.name, h.DataDir)
	// The network's record (chain networks: which subnets it owns) stays:
	// it is how the network's next ADD knows its subnets are its own.
	rs := nftRuleset(t, h.NetNS)
	for _, s := range c.subnets {
		for _, line := range strings.Split(grepLines(rs, s.String()), "\n") {
			if line != "" && !strings.Contains(line, `comment "subnet `) {
				t.Errorf("GC left network-level nftables elements of %s (no attachment is left):\n%s", s, line)
			}
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(cacheDir, "results")); len(entries) != 0 {
		t.Errorf("cache entries left after GC: %v", entries)
	}

	// DEL after GC, and of never-cached attachments, succeeds.
	for _, n := range []*testutil.NS{a, b, lost} {
		if _, err := tool.run("del", c.name, n.Path(), caps); err != nil {
			t.Errorf("cnitool del after gc: %v", err)
		}
	}
	if _, err := tool.run("status", c.name, "/dev/null", ""); err != nil {
		t.Errorf("cnitool status at the end: %v", err)
	}
	assertHostClean(t, h, c.name, h.DataDir)
	if entries, _ := os.ReadDir("/var/lib/cni/results"); len(entries) > 0 {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), c.name+"-") {
				t.Errorf("cnitool wrote %s into the machine's cache", e.Name())
			}
		}
	}
}

func parseResult(t *testing.T, out string) *current.Result {
	t.Helper()
	var r current.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("cnitool printed no result: %v\n%s", err, out)
	}
	if len(r.IPs) == 0 {
		t.Fatalf("result has no IPs: %s", out)
	}
	return &r
}

// assertAttached checks by netlink what ADD left: the owned host veth (on
// the bridge, or with host routes), the container's addresses as in the
// result, and routes via the gateway.
func assertAttached(t *testing.T, h *testutil.Host, c *exampleConf, n *testutil.NS, res *current.Result, id string) {
	t.Helper()
	hv := h.Link(link.HostVethName(ident.Attachment{Network: c.name, ContainerID: id, IfName: "eth0"}))
	if want := link.Alias(ident.Attachment{Network: c.name, ContainerID: id, IfName: "eth0"}); hv.Attrs().Alias != want {
		t.Errorf("host veth alias %q, want %q", hv.Attrs().Alias, want)
	}
	if hv.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is down", hv.Attrs().Name)
	}
	if !c.routed {
		if br := h.Link(c.bridge); hv.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("host veth %s is not on bridge %s", hv.Attrs().Name, c.bridge)
		}
	} else {
		routes, _ := h.Handle().RouteList(hv, netlink.FAMILY_ALL)
		for _, ipc := range res.IPs {
			found := false
			for _, r := range routes {
				found = found || (r.Dst != nil && r.Dst.IP.Equal(ipc.Address.IP))
			}
			if !found {
				t.Errorf("routed: no host route to %s via %s", ipc.Address.IP, hv.Attrs().Name)
			}
		}
	}
	have := addrsOf(t, n, "eth0")
	for _, ipc := range res.IPs {
		want := ipc.Address.String()
		if c.routed { // the container holds a host address; the result keeps IPAM's prefix
			want = (&net.IPNet{IP: ipc.Address.IP, Mask: net.CIDRMask(len(ipc.Address.Mask)*8, len(ipc.Address.Mask)*8)}).String()
		}
		if !slices.Contains(have, want) {
			t.Errorf("eth0 lacks %s from the result %s (has %v)", want, ipc.Address.String(), have)
		}
	}
	if len(res.Interfaces) == 0 || res.Interfaces[len(res.Interfaces)-1].Mac != n.Link("eth0").Attrs().HardwareAddr.String() {
		t.Errorf("result interfaces %+v do not match eth0's MAC", res.Interfaces)
	}
}

// checkPublished proves the published port from the host namespace
// (127.0.0.1 and every gateway address) and from `from` (a container
// reaching a published port through the host: hairpin).
func checkPublished(t *testing.T, c *exampleConf, h *testutil.Host, from *testutil.NS, owner *current.Result, tag string) {
	t.Helper()
	expectTag(t, "host -> 127.0.0.1 published port", h.NS, net.IPv4(127, 0, 0, 1), publishedPort, tag)
	for _, ipc := range owner.IPs {
		gw := ipc.Gateway
		if gw == nil || gw.IsLinkLocalUnicast() {
			continue // fe80::1 in routed mode is not a host address to dial
		}
		expectTag(t, "host -> gateway published port", h.NS, gw, publishedPort, tag)
		if from != h.NS {
			expectTag(t, "container -> gateway published port (hairpin)", from, gw, publishedPort, tag)
		}
	}
}

// assertShaped checks nswire's tc for the bandwidth capability: a tbf root
// on the host veth at ingressRate, and an ifb shaping egress at egressRate.
func assertShaped(t *testing.T, h *testutil.Host, veth string, bw map[string]uint64) {
	t.Helper()
	hv := h.Link(veth)
	if q, ok := rootQdisc(h.Handle(), hv.Attrs().Index).(*netlink.Tbf); !ok || q.Rate != bw["ingressRate"]/8 {
		t.Errorf("bandwidth: root qdisc of %s is %v, want tbf at %d bytes/s", veth, rootQdisc(h.Handle(), hv.Attrs().Index), bw["ingressRate"]/8)
	}
	if !hasQdisc(h.Handle(), hv.Attrs().Index, "ingress") {
		t.Errorf("bandwidth: no ingress qdisc on %s", veth)
	}
	ifb, err := h.Handle().LinkByName(shaping.IfbName(veth))
	if err != nil {
		t.Errorf("bandwidth: ifb %s: %v", shaping.IfbName(veth), err)
		return
	}
	if q, ok := rootQdisc(h.Handle(), ifb.Attrs().Index).(*netlink.Tbf); !ok || q.Rate != bw["egressRate"]/8 {
		t.Errorf("bandwidth: root qdisc of ifb is %v, want tbf at %d bytes/s", rootQdisc(h.Handle(), ifb.Attrs().Index), bw["egressRate"]/8)
	}
}
