package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"

	"github.com/nswire/nswire/pkg/agent"
	"github.com/nswire/nswire/pkg/testutil"
)

// clusterCIDRs are the simulated cluster's pod CIDRs; node i gets
// 10.244.i.0/24 and fd00:10:244:i::/64 and the LAN addresses 192.0.2.i and
// 2001:db8:2::i.
const clusterCIDRs = "10.244.0.0/16,fd00:10:244::/56"

// cluster is a real control plane and nodes as network namespaces on one
// L2 segment, each running nswire-agent as the DaemonSet would: with the
// ServiceAccount and RBAC of conf/k8s/nswire-agent.yaml.
type cluster struct {
	t          testing.TB
	lk         *leaks
	lan        *testutil.LAN
	cp         *testutil.ControlPlane
	admin      kubernetes.Interface
	kubeconfig string       // the agent's
	outside    *testutil.NS // the world beyond the cluster, on the LAN
	nodes      map[string]*agentNode
}

// agentNode is one node namespace and its agent.
type agentNode struct {
	*testutil.Host
	i       int
	name    string
	confDir string
	bridge  string
	dir     string
	agent   *testutil.Daemon
}

func newCluster(t testing.TB) *cluster {
	lk := newLeaks(t)
	c := &cluster{t: t, lk: lk, lan: testutil.NewLAN(t), nodes: map[string]*agentNode{}}
	cpNS := lk.ns()
	c.lan.Attach(t, cpNS, "192.0.2.100/24", "2001:db8:2::100/64")
	c.cp = testutil.StartControlPlane(t, testutil.ControlPlaneOptions{NetNS: cpNS.Path(), Address: "192.0.2.100"})
	c.admin = c.cp.Admin()
	applyRBAC(t, c.admin, filepath.Join(repo, "conf", "k8s", "nswire-agent.yaml"))
	c.kubeconfig = c.cp.ServiceAccountKubeconfig(t, "kube-system", "nswire-agent")
	c.outside = lk.ns()
	c.lan.Attach(t, c.outside, "192.0.2.200/24", "2001:db8:2::200/64")
	return c
}

// applyRBAC creates the manifest's ServiceAccount, ClusterRole and
// ClusterRoleBinding, so the agents run with exactly the rights it grants.
func applyRBAC(t testing.TB, k kubernetes.Interface, manifest string) {
	f, err := os.Open(manifest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLReader(bufio.NewReader(f))
	ctx := context.Background()
	var kinds []string
	for {
		doc, err := dec.Read()
		if err != nil {
			break
		}
		var meta metav1.TypeMeta
		if err := utilyaml.Unmarshal(doc, &meta); err != nil || meta.Kind == "" {
			continue
		}
		kinds = append(kinds, meta.Kind)
		switch meta.Kind {
		case "ServiceAccount":
			var o corev1.ServiceAccount
			mustDecode(t, doc, &o)
			_, err = k.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "ClusterRole":
			var o rbacv1.ClusterRole
			mustDecode(t, doc, &o)
			_, err = k.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			mustDecode(t, doc, &o)
			_, err = k.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("apply %s of %s: %v", meta.Kind, manifest, err)
		}
	}
	if strings.Join(kinds, ",") == "" {
		t.Fatalf("%s holds no object", manifest)
	}
}

func mustDecode(t testing.TB, doc []byte, v any) {
	if err := utilyaml.Unmarshal(doc, v); err != nil {
		t.Fatal(err)
	}
}

// createNode registers Node i as the controller manager and kubelet would
// leave it: pod CIDRs of both families, InternalIPs on the LAN (or ip4).
func (c *cluster) createNode(i int, ip4 string) string {
	c.t.Helper()
	name := fmt.Sprintf("node-%d", i)
	if ip4 == "" {
		ip4 = fmt.Sprintf("192.0.2.%d", i)
	}
	pods := []string{fmt.Sprintf("10.244.%d.0/24", i), fmt.Sprintf("fd00:10:244:%x::/64", i)}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{PodCIDR: pods[0], PodCIDRs: pods},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip4},
			{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("2001:db8:2::%x", i)},
		}}}
	if _, err := c.admin.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("create %s: %v", name, err)
	}
	return name
}

func (c *cluster) deleteNode(name string) {
	c.t.Helper()
	if err := c.admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		c.t.Fatalf("delete %s: %v", name, err)
	}
}

// addNode makes node i's namespace on the LAN and starts its agent.
func (c *cluster) addNode(i int) *agentNode {
	c.t.Helper()
	h := c.lk.host(binDir)
	n := &agentNode{Host: h, i: i, name: fmt.Sprintf("node-%d", i), confDir: c.t.TempDir(), bridge: testutil.Name("br"), dir: c.t.TempDir()}
	c.lan.Attach(c.t, h.NS, fmt.Sprintf("192.0.2.%d/24", i), fmt.Sprintf("2001:db8:2::%x/64", i))
	c.lk.network("nswire", h.DataDir)
	c.nodes[n.name] = n
	c.startAgent(n)
	return n
}

func (c *cluster) startAgent(n *agentNode) {
	n.agent = testutil.StartDaemon(c.t, n.Path(), n.dir, "nswire-agent", filepath.Join(binDir, "nswire-agent"),
		"--kubeconfig", c.kubeconfig, "--node-name", n.name, "--cni-conf-dir", n.confDir,
		"--cluster-cidr", clusterCIDRs, "--health-addr", "127.0.0.1:9467", "--resync", "1s",
		"--ipam-data-dir", n.DataDir, "--bridge", n.bridge)
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.t.Logf("%s's agent log:\n%s", n.name, n.agent.LogTail())
		}
	})
}

// routes is node n's agent routes: destination -> gateways.
func (n *agentNode) routes(t testing.TB) map[string][]string {
	out := map[string][]string{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := n.Handle().RouteListFiltered(fam, &netlink.Route{Protocol: agent.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatalf("routes of %s: %v", n.name, err)
		}
		for _, r := range rs {
			out[r.Dst.String()] = append(out[r.Dst.String()], r.Gw.String())
		}
	}
	return out
}

// wantRoutes waits until node n routes exactly want (destination -> gateway).
func (n *agentNode) wantRoutes(t testing.TB, what string, want map[string]string) {
	t.Helper()
	var got map[string][]string
	// Long enough for client-go's relist backoff after an API server outage.
	ok := waitFor(60*time.Second, func() bool {
		got = n.routes(t)
		if len(got) != len(want) {
			return false
		}
		for dst, gw := range want {
			if g := got[dst]; len(g) != 1 || g[0] != gw {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("%s: %s: routes %v, want %v\n%s", n.name, what, got, want, n.agent.LogTail())
	}
}

// routesTo is the routes every node but self wants towards nodes idx.
func routesTo(idx ...int) map[string]string {
	want := map[string]string{}
	for _, i := range idx {
		want[fmt.Sprintf("10.244.%d.0/24", i)] = fmt.Sprintf("192.0.2.%d", i)
		want[fmt.Sprintf("fd00:10:244:%x::/64", i)] = fmt.Sprintf("2001:db8:2::%x", i)
	}
	return want
}

func except(all []int, self int) []int {
	var out []int
	for _, i := range all {
		if i != self {
			out = append(out, i)
		}
	}
	return out
}

func waitFor(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// conflist waits for the agent's conflist and loads it.
func (n *agentNode) conflist(t testing.TB) *libcni.NetworkConfigList {
	t.Helper()
	path := filepath.Join(n.confDir, agent.ConflistName)
	if !waitFor(20*time.Second, func() bool { _, err := os.Stat(path); return err == nil }) {
		t.Fatalf("%s: no %s\n%s", n.name, path, n.agent.LogTail())
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return list
}

// ranges is the IPAM subnets of an nswire conflist.
func ranges(t testing.TB, list *libcni.NetworkConfigList) []string {
	var p struct {
		IPAM struct {
			Ranges [][]struct{ Subnet string }
		}
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &p); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, set := range p.IPAM.Ranges {
		for _, r := range set {
			out = append(out, r.Subnet)
		}
	}
	return out
}

// readyz asks the agent's /readyz inside the node's namespace.
func (n *agentNode) readyz() (int, error) {
	code, _, err := n.get("/readyz")
	return code, err
}

// get asks the agent's health server for path inside the node's namespace.
func (n *agentNode) get(path string) (int, string, error) {
	var code int
	var body []byte
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9467", time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\n\r\n", path); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		code = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return code, string(body), err
}

// metric reads one of the agent's unlabelled metrics.
func (n *agentNode) metric(t testing.TB, name string) float64 {
	t.Helper()
	code, body, err := n.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", n.name, code, err)
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("%s's /metrics has no %s", n.name, name)
	return 0
}

// waitRoutes waits until node n holds count routes of the agent.
func (n *agentNode) waitRoutes(t testing.TB, count int) {
	t.Helper()
	var got map[string][]string
	if !waitFor(60*time.Second, func() bool { got = n.routes(t); return len(got) == count }) {
		t.Fatalf("%s: %d routes, want %d\n%s", n.name, len(got), count, n.agent.LogTail())
	}
}

// waitReady waits until the agent's /readyz says it has converged.
func (n *agentNode) waitReady(t testing.TB) {
	t.Helper()
	var code int
	var err error
	if !waitFor(30*time.Second, func() bool { code, err = n.readyz(); return err == nil && code == http.StatusOK }) {
		t.Fatalf("%s /readyz: %d %v\n%s", n.name, code, err, n.agent.LogTail())
	}
}

// podOn adds a pod to node n through the agent's conflist, with the
// runtime's capability args caps (port mappings, bandwidth) if any.
func (n *agentNode) podOn(t testing.TB, list *libcni.NetworkConfigList, lk *leaks, caps ...map[string]any) (*testutil.NS, *libcni.RuntimeConf, []string) {
	t.Helper()
	pns := lk.ns()
	rt := testutil.RT(testutil.Name("pod"), pns, "eth0")
	for _, c := range caps {
		rt.CapabilityArgs = c
	}
	r, err := n.CNI.AddNetworkList(context.Background(), list, rt)
	if err != nil {
		t.Fatalf("ADD on %s: %v", n.name, err)
	}
	res := testutil.Result(t, r)
	var ips []string
	for _, ipc := range res.IPs {
		ips = append(ips, ipc.Address.IP.String())
	}
	t.Cleanup(func() {
		if err := n.CNI.DelNetworkList(context.Background(), list, rt); err != nil {
			t.Errorf("DEL on %s: %v", n.name, err)
		}
	})
	return pns, rt, ips
}

// TestAgentCluster: three nodes, each running nswire-agent against a real
// API server as the DaemonSet's ServiceAccount, become one pod network:
// conflists from their pod CIDRs, host-gw routes to each other (IPv4 and
// IPv6), pods reaching pods on other nodes by their addresses and the
// outside masqueraded; a firewall reload on a node is repaired by its
// agent by itself (the time it took is logged: the bar is a second, the
// deadline is ten so that a loaded CI machine does not fail it); then the routes follow Node changes, a route
// deleted by hand, an agent crash and an API server outage.
func TestAgentCluster(t *testing.T) {
	if _, err := testutil.K8sTools(); err != nil {
		t.Skipf("no control plane binaries: %v", err)
	}
	c := newCluster(t)
	all := []int{1, 2, 3}
	nodes := make([]*agentNode, len(all))
	for k, i := range all {
		c.createNode(i, "")
		nodes[k] = c.addNode(i)
	}
	lists := make([]*libcni.NetworkConfigList, len(nodes))
	for k, n := range nodes {
		lists[k] = n.conflist(t)
		want := []string{fmt.Sprintf("10.244.%d.0/24", n.i), fmt.Sprintf("fd00:10:244:%x::/64", n.i)}
		if got := ranges(t, lists[k]); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s's conflist ranges %v, want %v", n.name, got, want)
		}
		n.wantRoutes(t, "three nodes", routesTo(except(all, n.i)...))
		n.waitReady(t)
	}

	t.Run("traffic", func(t *testing.T) {
		testutil.Serve(t, c.outside, "tcp", ":9100")
		var pods []*testutil.NS
		var ips [][]string
		for k, n := range nodes {
			pns, _, pip := n.podOn(t, lists[k], c.lk)
			testutil.Serve(t, pns, "tcp", ":80")
			pods, ips = append(pods, pns), append(ips, pip)
		}
		for k := range nodes {
			next := (k + 1) % len(nodes)
			for f := range ips[k] {
				expectSource(t, pods[k], "tcp", net.JoinHostPort(ips[next][f], "80"), ips[k][f])
			}
			expectSource(t, pods[k], "tcp", "192.0.2.200:9100", fmt.Sprintf("192.0.2.%d", nodes[k].i))
			expectSource(t, pods[k], "tcp", "[2001:db8:2::200]:9100", fmt.Sprintf("2001:db8:2::%x", nodes[k].i))
		}
	})

	one, two := nodes[0], nodes[1]
	t.Run("firewall reload repaired by the agent", func(t *testing.T) {
		// A pod publishing hostPort 8080 on node-1, one on node-2.
		ports := map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}
		web, rt, webIPs := one.podOn(t, lists[0], c.lk, ports)
		other, _, otherIPs := two.podOn(t, lists[1], c.lk)
		testutil.Serve(t, web, "tcp", ":80")
		testutil.Serve(t, c.outside, "tcp", ":9101")
		node4, node6 := fmt.Sprintf("192.0.2.%d", one.i), fmt.Sprintf("2001:db8:2::%x", one.i)
		published := func() error { // from the LAN, both families
			for addr, src := range map[string]string{node4 + ":8080": "192.0.2.200", "[" + node6 + "]:8080": "2001:db8:2::200"} {
				got, err := testutil.Ask(c.outside, "tcp", addr)
				if err == nil && got != src {
					err = fmt.Errorf("the pod saw source %s, want %s", got, src)
				}
				if err != nil {
					return fmt.Errorf("published port %s: %w", addr, err)
				}
			}
			return nil
		}
		works := func() {
			t.Helper()
			if err := published(); err != nil {
				t.Error(err)
			}
			expectSource(t, web, "tcp", "192.0.2.200:9101", node4) // masquerade
			for f := range webIPs {
				expectSource(t, other, "tcp", net.JoinHostPort(webIPs[f], "80"), otherIPs[f]) // pod to pod, no NAT
			}
			if err := one.CNI.CheckNetworkList(context.Background(), lists[0], rt); err != nil {
				t.Errorf("CHECK: %v", err)
			}
		}
		works()
		repairs := one.metric(t, "nswire_agent_restore_repairs_total")

		// A firewall reload in node-1's namespace takes nswire's tables.
		flushed := time.Now()
		if _, err := execIn(one.NS, nil, "nft", "flush", "ruleset"); err != nil {
			t.Fatal(err)
		}
		var err error
		for time.Since(flushed) < 10*time.Second {
			if err = published(); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(flushed)
		if err != nil {
			t.Fatalf("not repaired %v after `nft flush ruleset`: %v\n%s", took.Round(time.Millisecond), err, one.agent.LogTail())
		}
		t.Logf("published port answering again %v after `nft flush ruleset`", took.Round(time.Millisecond))
		works()
		// The flush did take the state, and the agent put it back.
		if got := one.metric(t, "nswire_agent_restore_repairs_total"); got <= repairs {
			t.Errorf("nswire_agent_restore_repairs_total %v, was %v before the flush\n%s", got, repairs, one.agent.LogTail())
		}
		if log := one.agent.LogTail(); !strings.Contains(log, `"msg":"restored"`) || !strings.Contains(log, "by nft") {
			t.Errorf("no repair after nft's flush in the agent's log:\n%s", log)
		}
		if e := one.metric(t, "nswire_agent_restore_errors_total"); e != 0 {
			t.Errorf("nswire_agent_restore_errors_total %v\n%s", e, one.agent.LogTail())
		}
	})

	t.Run("node deleted, pod CIDR reused by a new node", func(t *testing.T) {
		c.deleteNode("node-3")
		one.wantRoutes(t, "node-3 deleted", routesTo(2))
		two.wantRoutes(t, "node-3 deleted", routesTo(1))
		// node-4 takes node-3's pod CIDRs with its own addresses.
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-4"},
			Spec: corev1.NodeSpec{PodCIDR: "10.244.3.0/24", PodCIDRs: []string{"10.244.3.0/24", "fd00:10:244:3::/64"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "192.0.2.4"}, {Type: corev1.NodeInternalIP, Address: "2001:db8:2::4"}}}}
		if _, err := c.admin.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want := routesTo(2)
		want["10.244.3.0/24"], want["fd00:10:244:3::/64"] = "192.0.2.4", "2001:db8:2::4"
		one.wantRoutes(t, "node-4 reuses node-3's pod CIDRs", want)
	})

	t.Run("route deleted by hand comes back", func(t *testing.T) {
		want := one.routes(t)
		dst := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", two.i))
		rs, _ := one.Handle().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(dst)}, netlink.RT_FILTER_DST)
		for _, r := range rs {
			if err := one.Handle().RouteDel(&r); err != nil {
				t.Fatal(err)
			}
		}
		one.wantRoutes(t, "after a route was deleted by hand", flat(want))
	})

	t.Run("agent killed and restarted", func(t *testing.T) {
		want := flat(one.routes(t))
		one.agent.Kill()
		c.startAgent(one)
		one.waitReady(t)
		one.wantRoutes(t, "after a crash", want) // exactly one route per destination
	})

	t.Run("API server outage", func(t *testing.T) {
		want := flat(one.routes(t))
		c.cp.StopAPIServer()
		time.Sleep(3 * time.Second) // three resync periods without an API server
		if got := flat(one.routes(t)); len(got) != len(want) {
			t.Errorf("routes during the outage %v, want %v kept", got, want)
		}
		if one.agent.Exited() {
			t.Fatalf("the agent exited without its API server:\n%s", one.agent.LogTail())
		}
		// An agent (re)started while the API server is down waits for it,
		// and touches nothing meanwhile.
		twoWant := flat(two.routes(t))
		two.agent.Stop()
		c.startAgent(two)
		time.Sleep(3 * time.Second)
		if two.agent.Exited() {
			t.Fatalf("an agent started without its API server exited:\n%s", two.agent.LogTail())
		}
		if got := flat(two.routes(t)); len(got) != len(twoWant) {
			t.Errorf("routes of an agent started during the outage %v, want %v kept", got, twoWant)
		}
		c.cp.StartAPIServer()
		c.createNode(5, "")
		want["10.244.5.0/24"], want["fd00:10:244:5::/64"] = "192.0.2.5", "2001:db8:2::5"
		one.wantRoutes(t, "a node created after the outage", want)
		two.waitReady(t)
	})

	t.Run("node off the LAN is skipped and reported", func(t *testing.T) {
		want := flat(one.routes(t))
		c.createNode(6, "198.51.100.6")
		// Its IPv6 address is on the LAN: only the IPv4 route is skipped.
		want["fd00:10:244:6::/64"] = "2001:db8:2::6"
		one.wantRoutes(t, "node-6 off-link over IPv4", want)
		ok := waitFor(20*time.Second, func() bool {
			evs, err := c.admin.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=node-6"})
			if err != nil {
				return false
			}
			for _, e := range evs.Items {
				if e.Reason == agent.ReasonUnreachable {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Errorf("no %s Event on node-6", agent.ReasonUnreachable)
		}
	})

	t.Run("SIGTERM leaves conflist and routes", func(t *testing.T) {
		want := flat(one.routes(t))
		one.agent.Stop()
		if got := flat(one.routes(t)); len(got) != len(want) {
			t.Errorf("routes after SIGTERM %v, want %v", got, want)
		}
		if _, err := os.Stat(filepath.Join(one.confDir, agent.ConflistName)); err != nil {
			t.Errorf("conflist after SIGTERM: %v", err)
		}
	})
}

// flat turns a routes() map into destination -> its single gateway.
func flat(m map[string][]string) map[string]string {
	out := map[string]string{}
	for dst, gws := range m {
		out[dst] = strings.Join(gws, ",")
	}
	return out
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
