package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nswire/nswire/pkg/testutil"
)

// criNode is a Kubernetes node without its kubelet: a private host
// namespace (with an upstream) where containerd runs nswire through its
// CRI plugin, driven over CRI exactly as the kubelet drives it.
type criNode struct {
	*testutil.Host
	up      *testutil.Upstream
	ctrd    *testutil.Containerd
	name    string // the CNI network: private to the test
	logFile string // nswire's log: one line per verb containerd ran
}

// newCRINode starts containerd with conf/k8s/<tmpl> as its conf_template,
// made private to the test (network name, bridge, IPAM dataDir, a log).
func newCRINode(t testing.TB, lk *leaks, tmpl string) *criNode {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repo, "conf", "k8s", tmpl))
	if err != nil {
		t.Fatal(err)
	}
	return startCRINode(t, lk, criBinDir(t), func(n *criNode) string {
		private := strings.NewReplacer(
			`"name": "nswire"`, fmt.Sprintf(`"name": %q`, n.name),
			`"bridge": "nswire0"`, fmt.Sprintf(`"bridge": %q`, testutil.Name("br")),
			`"type": "nswire",`, fmt.Sprintf(`"type": "nswire", "logFile": %q,`, n.logFile),
			`"type": "nswire-ipam",`, fmt.Sprintf(`"type": "nswire-ipam", "dataDir": %q,`, n.DataDir),
		).Replace(string(src))
		if private == string(src) {
			t.Fatalf("conf/k8s/%s changed shape: the test cannot make it private", tmpl)
		}
		return private
	})
}

// startCRINode starts containerd in a fresh host namespace with the
// conf_template that tmpl writes for the node, and bin_dir binDir.
func startCRINode(t testing.TB, lk *leaks, binDir string, tmpl func(*criNode) string) *criNode {
	t.Helper()
	h := lk.host()
	dir := t.TempDir()
	n := &criNode{Host: h, up: testutil.NewUpstream(t, h), name: testutil.Name("e2e-cri"), logFile: filepath.Join(dir, "nswire.log")}
	lk.network(n.name, h.DataDir)
	path := filepath.Join(dir, "cni.conflist.tmpl")
	if err := os.WriteFile(path, []byte(tmpl(n)), 0o644); err != nil {
		t.Fatal(err)
	}
	n.ctrd = testutil.StartContainerd(t, testutil.ContainerdOptions{Host: h, BinDir: binDir, ConfTemplate: path})
	return n
}

// criBinDir is containerd's bin_dir: nswire, nswire-ipam and the
// reference loopback, which containerd runs for every pod's lo.
func criBinDir(t testing.TB) string {
	dir := t.TempDir()
	for _, p := range []string{filepath.Join(binDir, "nswire"), filepath.Join(binDir, "nswire-ipam"), filepath.Join(refDir, "loopback")} {
		if err := os.Symlink(p, filepath.Join(dir, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// setPodCIDR sends the node's pod CIDRs as the kubelet does once the
// Node has them, and waits for containerd to report its network ready.
func (n *criNode) setPodCIDR(t testing.TB, cidrs ...string) {
	t.Helper()
	_, err := n.ctrd.Runtime.UpdateRuntimeConfig(ctx(t), &cri.UpdateRuntimeConfigRequest{
		RuntimeConfig: &cri.RuntimeConfig{NetworkConfig: &cri.NetworkConfig{PodCidr: strings.Join(cidrs, ",")}}})
	if err != nil {
		t.Fatalf("UpdateRuntimeConfig: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := n.ctrd.Runtime.Status(ctx(t), &cri.StatusRequest{})
		if err != nil {
			t.Fatalf("CRI Status: %v", err)
		}
		for _, c := range st.Status.Conditions {
			if c.Type == cri.NetworkReady && c.Status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd's network is not ready after UpdateRuntimeConfig: %v\n%s", st.Status.Conditions, n.ctrd.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pod is one running sandbox and its network namespace.
type pod struct {
	id  string
	ns  ns.NetNS
	ips []string // as containerd reports them
}

// podConfig is a sandbox config as the kubelet writes it.
func (n *criNode) podConfig(name string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: testutil.Name("uid"), Namespace: "default"},
		Hostname:     name,
		Labels:       map[string]string{"app": name},
		Annotations:  map[string]string{},
		DnsConfig:    &cri.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}},
		Linux:        &cri.LinuxPodSandboxConfig{CgroupParent: n.ctrd.CgroupParent},
		PortMappings: nil,
	}
}

// runPod runs a sandbox and opens its network namespace.
func (n *criNode) runPod(t testing.TB, cfg *cri.PodSandboxConfig) (*pod, error) {
	t.Helper()
	r, err := n.ctrd.Runtime.RunPodSandbox(ctx(t), &cri.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return nil, err
	}
	st, err := n.ctrd.Runtime.PodSandboxStatus(ctx(t), &cri.PodSandboxStatusRequest{PodSandboxId: r.PodSandboxId, Verbose: true})
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	p := &pod{id: r.PodSandboxId}
	if net := st.Status.GetNetwork(); net != nil {
		p.ips = append(p.ips, net.Ip)
		for _, ip := range net.AdditionalIps {
			p.ips = append(p.ips, ip.Ip)
		}
	}
	path := netnsPath(t, st.Info["info"])
	if p.ns, err = ns.GetNS(path); err != nil {
		t.Fatalf("sandbox netns %s: %v", path, err)
	}
	t.Cleanup(func() { p.ns.Close() })
	return p, nil
}

func (n *criNode) mustRunPod(t testing.TB, cfg *cri.PodSandboxConfig) *pod {
	t.Helper()
	p, err := n.runPod(t, cfg)
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v\n%s", cfg.Metadata.Name, err, n.ctrd.LogTail())
	}
	return p
}

// netnsPath digs the sandbox's network namespace out of containerd's
// verbose status (its OCI runtime spec).
func netnsPath(t testing.TB, info string) string {
	var v struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		}
	}
	if err := json.Unmarshal([]byte(info), &v); err != nil {
		t.Fatalf("sandbox info: %v", err)
	}
	for _, ns := range v.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	t.Fatalf("sandbox info names no network namespace: %s", info)
	return ""
}

// stopPod is the kubelet's teardown: StopPodSandbox (CNI DEL), then
// RemovePodSandbox.
func (n *criNode) stopPod(t testing.TB, p *pod) {
	t.Helper()
	if _, err := n.ctrd.Runtime.StopPodSandbox(ctx(t), &cri.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		t.Fatalf("StopPodSandbox: %v\n%s", err, n.ctrd.LogTail())
	}
	if _, err := n.ctrd.Runtime.RemovePodSandbox(ctx(t), &cri.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
}

// verbs counts the CNI verbs nswire logged for this node's network.
func (n *criNode) verbs(t testing.TB) map[string]int {
	b, err := os.ReadFile(n.logFile)
	if err != nil {
		t.Fatalf("nswire log: %v", err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct{ Msg string }
		if json.Unmarshal([]byte(line), &e) == nil {
			out[strings.TrimSuffix(e.Msg, " failed")]++
		}
	}
	return out
}

// assertClean checks the node holds nothing of any pod: veths, ifbs,
// firewall elements and chains, reservations.
func (n *criNode) assertClean(t testing.TB) {
	t.Helper()
	n.AssertNoLeaks()
	if r := reservations(n.DataDir, n.name); r != 0 {
		t.Errorf("%d reservations left", r)
	}
}

func ipIn(t testing.TB, ip, cidr string) {
	t.Helper()
	_, n, _ := net.ParseCIDR(cidr)
	if a := net.ParseIP(ip); a == nil || !n.Contains(a) {
		t.Errorf("pod address %q is not in the pod CIDR %s", ip, cidr)
	}
}

// TestCRIConfTemplate: containerd renders conf/k8s's template when the
// kubelet reports the pod CIDRs (UpdateRuntimeConfig), and every sandbox
// is then wired by nswire: an address of the pod CIDR on eth0 that
// containerd reports, pod-to-pod traffic through the bridge, traffic to
// the upstream masqueraded. containerd passes K8S_POD_* in CNI_ARGS.
func TestCRIConfTemplate(t *testing.T) {
	cases := []struct {
		tmpl  string
		cidrs []string
	}{
		{"nswire.conflist.tmpl", []string{"10.244.201.0/24"}},
		{"nswire-dualstack.conflist.tmpl", []string{"10.244.202.0/24", "fd00:10:244:ca::/64"}},
	}
	for _, c := range cases {
		t.Run(c.tmpl, func(t *testing.T) {
			t.Parallel()
			lk := newLeaks(t)
			n := newCRINode(t, lk, c.tmpl)
			if _, err := n.runPod(t, n.podConfig("early")); err == nil {
				t.Error("RunPodSandbox succeeded before the node had a pod CIDR")
			}
			n.setPodCIDR(t, c.cidrs...)
			a := n.mustRunPod(t, n.podConfig("a"))
			b := n.mustRunPod(t, n.podConfig("b"))
			for _, p := range []*pod{a, b} {
				if len(p.ips) != len(c.cidrs) {
					t.Fatalf("containerd reports %v for a pod of %v", p.ips, c.cidrs)
				}
				for i, ip := range p.ips {
					ipIn(t, ip, c.cidrs[i])
				}
			}
			for i := range c.cidrs {
				testutil.Serve(t, b.ns, "tcp", net.JoinHostPort(b.ips[i], "80"))
				expectSource(t, a.ns, "tcp", net.JoinHostPort(b.ips[i], "80"), a.ips[i])
			}
			testutil.Serve(t, n.up.NS, "tcp", ":9000")
			expectSource(t, a.ns, "tcp", "203.0.113.2:9000", "203.0.113.1")
			if len(c.cidrs) > 1 {
				expectSource(t, a.ns, "tcp", "[2001:db8:f::2]:9000", "2001:db8:f::1")
			}
			n.stopPod(t, a)
			n.stopPod(t, b)
			n.assertClean(t)
			if v := n.verbs(t); v["ADD"] != 2 || v["DEL"] < 2 || v["CHECK"]+v["STATUS"]+v["GC"] != 0 {
				t.Errorf("containerd ran %v; want 2 ADD, DEL per stop, no CHECK, STATUS or GC (cniVersion 1.0.0)", v)
			}
		})
	}
}

// expectSource asks addr from n and wants the server to see source src.
func expectSource(t *testing.T, n ns.NetNS, network, addr, src string) {
	t.Helper()
	got, err := testutil.Ask(n, network, addr)
	if err != nil {
		t.Errorf("%s %s: %v", network, addr, err)
	} else if got != src {
		t.Errorf("%s %s: server saw source %s, want %s", network, addr, got, src)
	}
}

// TestCRIHostPort: a pod's hostPorts (tcp and udp, with and without
// host_ip) answer on the node from the node itself, its 127.0.0.1, another
// pod (hairpin through the node's address) and the upstream; a second pod
// asking for a held port fails with nswire's error through CRI, and leaves
// nothing behind.
func TestCRIHostPort(t *testing.T) {
	lk := newLeaks(t)
	n := newCRINode(t, lk, "nswire.conflist.tmpl")
	n.setPodCIDR(t, "10.244.203.0/24")
	cfg := n.podConfig("web")
	cfg.PortMappings = []*cri.PortMapping{
		{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: 8080},
		{Protocol: cri.Protocol_UDP, ContainerPort: 53, HostPort: 8053},
		{Protocol: cri.Protocol_TCP, ContainerPort: 443, HostPort: 8443, HostIp: "203.0.113.1"},
	}
	web := n.mustRunPod(t, cfg)
	testutil.Serve(t, web.ns, "tcp", ":80")
	testutil.Serve(t, web.ns, "udp", ":53")
	testutil.Serve(t, web.ns, "tcp", ":443")
	client := n.mustRunPod(t, n.podConfig("client"))
	for _, from := range []struct {
		name string
		ns   ns.NetNS
	}{{"node", n.NS}, {"pod", client.ns}, {"upstream", n.up.NS}} {
		for _, target := range []struct{ network, addr string }{
			{"tcp", "203.0.113.1:8080"}, {"udp", "203.0.113.1:8053"}, {"tcp", "203.0.113.1:8443"},
		} {
			if _, err := testutil.Ask(from.ns, target.network, target.addr); err != nil {
				t.Errorf("hostPort %s %s from the %s: %v", target.network, target.addr, from.name, err)
			}
		}
	}
	for _, target := range []struct{ network, addr string }{{"tcp", "127.0.0.1:8080"}, {"udp", "127.0.0.1:8053"}} {
		if _, err := testutil.Ask(n.NS, target.network, target.addr); err != nil {
			t.Errorf("hostPort %s %s from the node: %v", target.network, target.addr, err)
		}
	}
	if _, err := testutil.Ask(n.NS, "tcp", "127.0.0.1:8443"); err == nil {
		t.Error("a hostPort bound to host_ip 203.0.113.1 answers on 127.0.0.1")
	}

	before := n.Snapshot()
	dup := n.podConfig("dup")
	dup.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: 8080}}
	_, err := n.runPod(t, dup)
	if err == nil || !strings.Contains(err.Error(), "8080") {
		t.Fatalf("a second pod on hostPort 8080: %v, want nswire's error naming the port", err)
	}
	t.Logf("refused through CRI: %v", err)
	if after := n.Snapshot(); after != before {
		t.Errorf("the refused pod changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := testutil.Ask(n.up.NS, "tcp", "203.0.113.1:8080"); err != nil {
		t.Errorf("the first pod's hostPort after the refused one: %v", err)
	}
	n.stopPod(t, web)
	n.stopPod(t, client)
	n.assertClean(t)
}

// TestCRIBandwidth: pods annotated as kubelet users write it (a rate, no
// burst) start and are shaped. containerd turns each rate into the
// bandwidth capability with a burst of 2^32-1 bits, which the kernel caps
// at 4.29 s of traffic (2.7 MB at 5 Mbit/s): the measure starts once that
// initial burst has passed. One pod per direction, each measured from
// its own full bucket.
func TestCRIBandwidth(t *testing.T) {
	lk := newLeaks(t)
	n := newCRINode(t, lk, "nswire.conflist.tmpl")
	n.setPodCIDR(t, "10.244.204.0/24")
	const rate = 5e6
	for _, dir := range []string{"ingress", "egress"} {
		cfg := n.podConfig(dir)
		cfg.Annotations = map[string]string{"kubernetes.io/" + dir + "-bandwidth": "5M"}
		p := n.mustRunPod(t, cfg)
		var from, to ns.NetNS = n.NS, p.ns
		addr := net.JoinHostPort(p.ips[0], "5001")
		if dir == "egress" {
			from, to, addr = p.ns, n.NS, "203.0.113.1:5002"
		}
		t.Logf("%s, annotation 5M:", dir)
		testutil.ShapedRate(t, from, to, addr, time.Second, rate, 0.8, 1.15)
		n.stopPod(t, p)
	}
	n.assertClean(t)
}

// TestCRITeardown: stopping a sandbox whose network namespace is already
// gone succeeds and leaves nothing; so does a sandbox stopped twice.
func TestCRITeardown(t *testing.T) {
	lk := newLeaks(t)
	n := newCRINode(t, lk, "nswire-dualstack.conflist.tmpl")
	n.setPodCIDR(t, "10.244.205.0/24", "fd00:10:244:cd::/64")
	p := n.mustRunPod(t, n.podConfig("orphan"))
	path := netnsOf(t, n, p)
	if !strings.HasPrefix(path, n.ctrd.Dir+"/") {
		t.Errorf("containerd keeps the sandbox netns at %s, outside its private state", path)
	}
	if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil {
		t.Fatalf("unmount the sandbox netns: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctrd.Runtime.StopPodSandbox(ctx(t), &cri.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		t.Fatalf("StopPodSandbox without its netns: %v\n%s", err, n.ctrd.LogTail())
	}
	n.stopPod(t, p) // again, then removed
	n.assertClean(t)
}

func netnsOf(t *testing.T, n *criNode, p *pod) string {
	st, err := n.ctrd.Runtime.PodSandboxStatus(ctx(t), &cri.PodSandboxStatusRequest{PodSandboxId: p.id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	return netnsPath(t, st.Info["info"])
}

// TestCRIRestart: containerd restarted under running pods: they keep their
// network, and a later stop tears them down cleanly.
func TestCRIRestart(t *testing.T) {
	lk := newLeaks(t)
	n := newCRINode(t, lk, "nswire.conflist.tmpl")
	n.setPodCIDR(t, "10.244.206.0/24")
	cfg := n.podConfig("survivor")
	cfg.PortMappings = []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 80, HostPort: 8081}}
	a := n.mustRunPod(t, cfg)
	b := n.mustRunPod(t, n.podConfig("peer"))
	testutil.Serve(t, a.ns, "tcp", ":80")
	n.ctrd.Stop()
	n.ctrd.Start()
	expectSource(t, b.ns, "tcp", net.JoinHostPort(a.ips[0], "80"), b.ips[0])
	if _, err := testutil.Ask(n.up.NS, "tcp", "203.0.113.1:8081"); err != nil {
		t.Errorf("hostPort after the restart: %v", err)
	}
	c := n.mustRunPod(t, n.podConfig("after"))
	expectSource(t, c.ns, "tcp", net.JoinHostPort(a.ips[0], "80"), c.ips[0])
	for _, p := range []*pod{a, b, c} {
		n.stopPod(t, p)
	}
	n.assertClean(t)
}
