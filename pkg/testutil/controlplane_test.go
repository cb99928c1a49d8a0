package testutil

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// needControlPlane skips, saying why, where a control plane cannot run.
func needControlPlane(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nsenter)")
	}
	if _, err := K8sTools(); err != nil {
		t.Skipf("no control plane binaries: %v", err)
	}
}

func TestControlPlane(t *testing.T) {
	needControlPlane(t)
	start := time.Now()
	cp := StartControlPlane(t, ControlPlaneOptions{})
	t.Logf("started in %v; RSS etcd %s, kube-apiserver %s", time.Since(start).Round(time.Millisecond), rss(cp.etcd), rss(cp.apiserver))
	ctx := context.Background()
	node := createNode(t, cp.Admin(), "node-a", "10.244.1.0/24", "10.0.0.11")

	grantNodeReader(t, cp.Admin(), "nswire-test", "agent")
	agent := cp.Client(t, cp.ServiceAccountKubeconfig(t, "nswire-test", "agent"))
	got := eventuallyGetNode(t, agent, node.Name)
	if got.Spec.PodCIDRs[0] != "10.244.1.0/24" || got.Status.Addresses[0].Address != "10.0.0.11" {
		t.Fatalf("node read back as %v %v", got.Spec.PodCIDRs, got.Status.Addresses)
	}
	err := agent.CoreV1().Nodes().Delete(ctx, node.Name, metav1.DeleteOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("service account deleted a node: want Forbidden, got %v", err)
	}

	// Outage: the same clients fail, then work again on the same data.
	stop := time.Now()
	cp.StopAPIServer()
	t.Logf("apiserver stopped in %v", time.Since(stop).Round(time.Millisecond))
	if _, err := agent.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err == nil {
		t.Fatalf("node read while the apiserver is stopped")
	}
	restart := time.Now()
	cp.StartAPIServer()
	t.Logf("apiserver restarted in %v", time.Since(restart).Round(time.Millisecond))
	if _, err := agent.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("node after restart: %v", err)
	}
	t.Logf("kubelet kubeconfig: %s", cp.KubeletKubeconfig(t, node.Name))
}

func TestControlPlaneInNetNS(t *testing.T) {
	needControlPlane(t)
	n := NewNS(t)
	cp := StartControlPlane(t, ControlPlaneOptions{NetNS: n.Path()})
	for _, p := range []*proc{cp.etcd, cp.apiserver} {
		if !sameNetNS(t, p.cmd.Process.Pid, n.Path()) {
			t.Fatalf("%s does not run in %s", p.name, n.Path())
		}
	}
	createNode(t, cp.Admin(), "node-b", "10.244.2.0/24", "10.0.0.12")
	if _, err := cp.Admin().CoreV1().Nodes().Get(context.Background(), "node-b", metav1.GetOptions{}); err != nil {
		t.Fatalf("node from inside the namespace: %v", err)
	}
}

func createNode(t *testing.T, c kubernetes.Interface, name, podCIDR, ip string) *corev1.Node {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip},
		}},
	}
	got, err := c.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	return got
}

// grantNodeReader binds a ClusterRole allowing nodes get/list/watch to the
// ServiceAccount namespace/name, as the agent's manifest does.
func grantNodeReader(t *testing.T, c kubernetes.Interface, namespace, name string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "nswire-test-node-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}},
	}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create clusterrole: %v", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: name}},
	}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create clusterrolebinding: %v", err)
	}
}

// eventuallyGetNode reads a node, retrying while Forbidden: the RBAC
// authorizer sees a new binding through its informer, a moment later.
func eventuallyGetNode(t *testing.T, c kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := c.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			return n
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("get node %s as the service account: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sameNetNS(t *testing.T, pid int, path string) bool {
	t.Helper()
	var a, b syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &a); err != nil {
		t.Fatalf("netns of %d: %v", pid, err)
	}
	if err := syscall.Stat(path, &b); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// rss is a daemon's resident set size, as /proc reports it.
func rss(p *proc) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
