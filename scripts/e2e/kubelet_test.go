package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nswire/nswire/pkg/testutil"
)

// kubeletNode is a node with everything a real one runs: containerd, the
// agent writing containerd's CNI config, and a kubelet registered with the
// control plane.
type kubeletNode struct {
	*agentNode
	ip      string
	ctrd    *testutil.Containerd
	kubelet *testutil.Kubelet
}

// addKubeletNode makes node i (192.0.2.i on the LAN, pod CIDR
// 10.244.i.0/24) and waits until its kubelet reports it Ready.
func (c *cluster) addKubeletNode(i int) *kubeletNode {
	t := c.t
	t.Helper()
	name, cidr := fmt.Sprintf("node-%d", i), fmt.Sprintf("10.244.%d.0/24", i)
	// What the node IPAM controller would do; the kubelet sets the rest.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}
	if _, err := c.admin.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	h := c.lk.host()
	n := &kubeletNode{ip: fmt.Sprintf("192.0.2.%d", i)}
	c.lan.Attach(t, h.NS, n.ip+"/24")
	c.lk.network("nswire", h.DataDir)
	n.ctrd = testutil.StartContainerd(t, testutil.ContainerdOptions{Host: h, BinDir: criBinDir(t)})
	n.agentNode = &agentNode{Host: h, i: i, name: name, confDir: n.ctrd.ConfDir, bridge: testutil.Name("br"), dir: t.TempDir()}
	c.nodes[name] = n.agentNode
	c.startAgent(n.agentNode)
	start := time.Now()
	n.kubelet = testutil.StartKubelet(t, testutil.KubeletOptions{Host: h, NodeName: name, NodeIP: n.ip,
		Kubeconfig: c.cp.KubeletKubeconfig(t, name), RuntimeSocket: n.ctrd.Socket})
	ok := waitFor(2*time.Minute, func() bool {
		got, err := c.admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && nodeReady(got)
	})
	if !ok {
		t.Fatalf("%s not Ready\nkubelet:\n%s\nagent:\n%s", name, n.kubelet.LogTail(), n.agent.LogTail())
	}
	t.Logf("%s Ready %v after the kubelet started", name, time.Since(start).Round(time.Millisecond))
	return n
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// hostPortPod is a pause container bound to node with containerPort 80
// published on hostPort 8080.
func hostPortPod(name, node string) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName: node, AutomountServiceAccountToken: &no, EnableServiceLinks: &no,
			DNSPolicy: corev1.DNSDefault, // no cluster DNS here
			Containers: []corev1.Container{{
				Name: "pause", Image: testutil.PauseImageName, ImagePullPolicy: corev1.PullNever,
				Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
}

// runPodOn creates the pod and waits until it runs with an address.
func (c *cluster) runPodOn(n *kubeletNode, p *corev1.Pod) *corev1.Pod {
	t := c.t
	t.Helper()
	pods := c.admin.CoreV1().Pods(p.Namespace)
	if _, err := pods.Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
	start := time.Now()
	got := p
	ok := waitFor(2*time.Minute, func() bool {
		cur, err := pods.Get(context.Background(), p.Name, metav1.GetOptions{})
		if err == nil {
			got = cur
		}
		return err == nil && got.Status.Phase == corev1.PodRunning && got.Status.PodIP != ""
	})
	if !ok {
		t.Fatalf("pod %s not Running: %+v\nkubelet:\n%s\ncontainerd:\n%s", p.Name, got.Status, n.kubelet.LogTail(), n.ctrd.LogTail())
	}
	t.Logf("pod %s Running with %s %v after its creation", p.Name, got.Status.PodIP, time.Since(start).Round(time.Millisecond))
	return got
}

// sandboxes lists containerd's sandboxes of the pod named name.
func (n *kubeletNode) sandboxes(t testing.TB, name string) []*cri.PodSandbox {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := n.ctrd.Runtime.ListPodSandbox(c, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": name}}})
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	return r.Items
}

// podNetNS opens the network namespace of the pod's ready sandbox.
func (n *kubeletNode) podNetNS(t testing.TB, name string) ns.NetNS {
	t.Helper()
	for _, s := range n.sandboxes(t, name) {
		if s.State != cri.PodSandboxState_SANDBOX_READY {
			continue
		}
		st, err := n.ctrd.Runtime.PodSandboxStatus(ctx(t), &cri.PodSandboxStatusRequest{PodSandboxId: s.Id, Verbose: true})
		if err != nil {
			t.Fatalf("PodSandboxStatus: %v", err)
		}
		netns, err := ns.GetNS(netnsPath(t, st.Info["info"]))
		if err != nil {
			t.Fatalf("pod %s's netns: %v", name, err)
		}
		t.Cleanup(func() { netns.Close() })
		return netns
	}
	t.Fatalf("containerd has no ready sandbox of pod %s", name)
	return nil
}

// TestKubelet: a real kubelet (with containerd) on a node whose CNI config
// nswire-agent writes from the Node's pod CIDR. A Pod bound to the node
// gets its address from nswire, answers on its hostPort from the LAN, and
// leaves nothing on the node once deleted. The kubelet adds no iptables
// rule, and the machine keeps its sysctls, cgroups, mounts and files.
func TestKubelet(t *testing.T) {
	if _, err := testutil.K8sTools(); err != nil { // builds what is missing
		t.Skipf("no kubelet (scripts/k8s-tools.sh builds it): %v", err)
	}
	var n *kubeletNode
	before := machineState(t)
	t.Cleanup(func() { // runs last, after every other cleanup
		if n != nil {
			assertMachineRestored(t, before, n.kubelet)
		}
	})
	c := newCluster(t)
	n = c.addKubeletNode(1)
	if got := ranges(t, n.conflist(t)); len(got) != 1 || got[0] != "10.244.1.0/24" {
		t.Errorf("the agent's conflist has ranges %v, want [10.244.1.0/24]", got)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if _, err := c.admin.CoreV1().ServiceAccounts("default").Create(context.Background(), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	pod := c.runPodOn(n, hostPortPod("web", n.name))
	ipIn(t, pod.Status.PodIP, "10.244.1.0/24")
	testutil.Serve(t, n.podNetNS(t, pod.Name), "tcp", ":80")
	src, err := testutil.Ask(c.outside, "tcp", net.JoinHostPort(n.ip, "8080"))
	if err != nil {
		t.Errorf("hostPort 8080 of %s from the LAN: %v", n.name, err)
	} else {
		t.Logf("hostPort %s:8080 answered from the LAN; the pod saw %s", n.ip, src)
	}
	n.assertNoKubeletIPTables(t)

	deletePod(t, c, n, pod.Name)
}

// deletePod deletes the pod at once (grace 0) and waits until the kubelet
// has torn its network down (StopPodSandbox: CNI DEL). Its container GC
// removes the stopped sandbox only on a fixed one-minute period, so the
// test does not wait for that; containerd's cleanup removes it.
func deletePod(t testing.TB, c *cluster, n *kubeletNode, name string) {
	t.Helper()
	start := time.Now()
	zero := int64(0)
	if err := c.admin.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(time.Minute, func() bool { return n.clean(t) }) {
		t.Fatalf("pod %s's network is still on %s\n%s", name, n.name, n.kubelet.LogTail())
	}
	t.Logf("network of %s torn down %v after the deletion", name, time.Since(start).Round(time.Millisecond))
	n.assertClean(t)
}

// clean reports whether the node holds nothing of any pod.
func (n *kubeletNode) clean(t testing.TB) bool {
	return len(ownedLinks(t, n.Handle(), "nswire")) == 0 && len(n.AttachmentChains()) == 0 &&
		len(n.PortElements()) == 0 && reservations(n.DataDir, "nswire") == 0
}

// assertClean: no veth, firewall element or chain, or reservation left.
func (n *kubeletNode) assertClean(t testing.TB) {
	t.Helper()
	n.AssertNoLeaks()
	if r := reservations(n.DataDir, "nswire"); r != 0 {
		t.Errorf("%d reservations left", r)
	}
}

// assertNoKubeletIPTables: the kubelet runs in the node namespace, so
// iptables rules it made would be there; with makeIPTablesUtilChains off
// there are none.
func (n *kubeletNode) assertNoKubeletIPTables(t testing.TB) {
	t.Helper()
	var own, its syscall.Stat_t
	if err := syscall.Stat(n.Path(), &own); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", n.kubelet.Pid()), &its); err != nil || its.Ino != own.Ino {
		t.Errorf("the kubelet does not run in the node namespace (%v)", err)
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if rules, err := execIn(n.NS, nil, tool); err != nil || strings.Contains(rules, "KUBE-") {
			t.Errorf("%s of the node namespace (%v):\n%s", tool, err, rules)
		}
	}
}

// machineSnapshot is what a kubelet could change on the machine itself.
type machineSnapshot struct {
	iptables, ip6tables string
	sysctls             map[string]string
	logDir              bool
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func machineState(t testing.TB) machineSnapshot {
	t.Helper()
	save := func(tool string) string {
		out, err := execIn(nil, nil, tool)
		if err != nil {
			t.Fatalf("%s of the machine: %v", tool, err)
		}
		var keep []string
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, "#") {
				keep = append(keep, counters.ReplaceAllString(l, ""))
			}
		}
		return strings.Join(keep, "\n")
	}
	s := machineSnapshot{iptables: save("iptables-save"), ip6tables: save("ip6tables-save"), sysctls: map[string]string{}}
	for _, k := range []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"} {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		s.sysctls[k] = strings.TrimSpace(string(b))
	}
	_, err := os.Stat("/var/log/containers")
	s.logDir = err == nil
	return s
}

// assertMachineRestored compares the machine with before, and looks for
// anything left of the kubelet: process, mount, cgroup, directory.
func assertMachineRestored(t testing.TB, before machineSnapshot, k *testutil.Kubelet) {
	after := machineState(t)
	if after.iptables != before.iptables || after.ip6tables != before.ip6tables {
		t.Errorf("the machine's iptables changed:\nbefore:\n%s\n%s\nafter:\n%s\n%s", before.iptables, before.ip6tables, after.iptables, after.ip6tables)
	}
	for key, v := range before.sysctls {
		if after.sysctls[key] != v {
			t.Errorf("sysctl %s is %s, was %s", key, after.sysctls[key], v)
		}
	}
	if after.logDir != before.logDir {
		t.Errorf("/var/log/containers exists: %v, before: %v", after.logDir, before.logDir)
	}
	if _, err := os.Stat(k.Dir); err == nil {
		t.Errorf("%s left", k.Dir)
	}
	if cgs, _ := filepath.Glob("/sys/fs/cgroup/*" + k.CgroupRoot); len(cgs) > 0 {
		t.Errorf("cgroups left: %v", cgs)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), k.Dir) {
		t.Errorf("mounts under %s left", k.Dir)
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), k.Dir) {
			t.Errorf("process %s left: %s", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
