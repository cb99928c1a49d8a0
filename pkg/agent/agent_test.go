package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// eventually waits for cond with a deadline; it asserts nothing by sleeping.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startAgent runs an agent until the test ends or stop is called, and
// waits for Run to return.
func startAgent(t *testing.T, cfg Config) (a *Agent, stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(stop)
	return a, stop
}

// fakeClient is a fake clientset that closes watching once an informer
// watches Nodes: the fake drops changes made between its list and watch.
func fakeClient(objects ...runtime.Object) (*fake.Clientset, <-chan struct{}) {
	client := fake.NewClientset(objects...)
	watching := make(chan struct{})
	var once sync.Once
	client.PrependWatchReactor("nodes", func(k8stesting.Action) (bool, watch.Interface, error) {
		once.Do(func() { close(watching) })
		return false, nil, nil
	})
	return client, watching
}

func routeVia(t *testing.T, a *Agent, dst string) string {
	return ours(t, a.routes)[dst]
}

func TestAgentFollowsNodes(t *testing.T) {
	n := lanNS(t)
	self := node("self", 1, nil, "192.0.2.10")
	client, watching := fakeClient(self,
		node("a", 1, []string{"10.244.1.0/24"}, "192.0.2.1"),
		node("far", 1, []string{"10.244.3.0/24"}, "198.51.100.7"))
	dir := t.TempDir()
	conflist := filepath.Join(dir, ConflistName)
	a, stop := startAgent(t, Config{Client: client, NodeName: "self", ConfDir: dir, Netlink: n.Handle(),
		ClusterCIDRs: prefixes("10.244.0.0/16"), Resync: 50 * time.Millisecond})
	<-watching
	ctx := context.Background()
	nodes := client.CoreV1().Nodes()

	eventually(t, "route to a", func() bool { return routeVia(t, a, "10.244.1.0/24") == "192.0.2.1" })
	if _, err := os.Stat(conflist); !os.IsNotExist(err) || a.Ready() {
		t.Fatalf("without a pod CIDR: conflist %v, ready %v", err, a.Ready())
	}
	self.Spec.PodCIDRs, self.Spec.PodCIDR = []string{"10.244.0.0/24"}, "10.244.0.0/24"
	if _, err := nodes.Update(ctx, self, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready", a.Ready)
	data, err := os.ReadFile(conflist)
	if err != nil || !strings.Contains(string(data), `"subnet": "10.244.0.0/24"`) {
		t.Fatalf("conflist %v:\n%s", err, data)
	}
	expectOneEvent(t, a, client, "far", ReasonUnreachable)

	moved := node("a", 1, []string{"10.244.1.0/24"}, "192.0.2.5")
	if _, err := nodes.Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route to a replaced", func() bool { return routeVia(t, a, "10.244.1.0/24") == "192.0.2.5" })
	if _, err := nodes.Create(ctx, node("b", 1, []string{"10.244.2.0/24"}, "192.0.2.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route to b", func() bool { return routeVia(t, a, "10.244.2.0/24") == "192.0.2.2" })
	if err := nodes.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route to a gone", func() bool { return routeVia(t, a, "10.244.1.0/24") == "" })

	deleteOurs(t, n.Handle(), a.routes)
	eventually(t, "route to b back after a resync", func() bool { return routeVia(t, a, "10.244.2.0/24") == "192.0.2.2" })
	expectMetrics(t, a, "nswire_agent_routes_programmed 1", `nswire_agent_nodes_skipped{reason="NSWireUnreachableNodeIP"} 1`,
		"nswire_agent_conflist_writes_total 1")

	stop() // as at SIGTERM: pods keep working through an agent upgrade
	if _, err := os.Stat(conflist); err != nil {
		t.Errorf("conflist after stop: %v", err)
	}
	expectRoutes(t, a.routes, map[string]string{"10.244.2.0/24": "192.0.2.2"})
}

// expectOneEvent waits for the Warning Event on node, then for several
// more syncs, and checks the event was sent once, not at every sync.
func expectOneEvent(t *testing.T, a *Agent, client kubernetes.Interface, node, reason string) {
	t.Helper()
	events := func() []corev1.Event {
		list, err := client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []corev1.Event
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node && e.Reason == reason {
				out = append(out, e)
			}
		}
		return out
	}
	eventually(t, reason+" event on "+node, func() bool { return len(events()) > 0 })
	start := syncCount(t, a)
	eventually(t, "more syncs", func() bool { return syncCount(t, a) >= start+5 })
	if got := events(); len(got) != 1 || got[0].Count > 1 {
		t.Errorf("events on %s: %+v", node, got)
	}
}

func syncCount(t *testing.T, a *Agent) uint64 {
	t.Helper()
	families, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "nswire_agent_sync_duration_seconds" {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func expectMetrics(t *testing.T, a *Agent, lines ...string) {
	t.Helper()
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, l := range lines {
		if !strings.Contains(rec.Body.String(), "\n"+l+"\n") {
			t.Errorf("metrics lack %q", l)
		}
	}
	for path, code := range map[string]int{"/healthz": 200, "/readyz": 200} {
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != code {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}

func deleteOurs(t *testing.T, h *netlink.Handle, r *Routes) {
	t.Helper()
	list, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range list {
		if err := h.RouteDel(&rt); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAgentAPIUnreachable starts the agent against an API server that does
// not answer: it must neither crash nor act on its empty cache (which
// would delete every route), stay alive for /healthz and unready.
func TestAgentAPIUnreachable(t *testing.T) {
	n := lanNS(t)
	kept := &netlink.Route{Dst: prefixNet(netip.MustParsePrefix("10.244.7.0/24")), Gw: net.ParseIP("192.0.2.7"), Protocol: RouteProtocol}
	if err := n.Handle().RouteAdd(kept); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + addr, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := startAgent(t, Config{Client: client, NodeName: "self", ConfDir: t.TempDir(), Netlink: n.Handle(),
		ClusterCIDRs: prefixes("10.244.0.0/16"), Resync: 20 * time.Millisecond})
	first := a.heartbeat.Load()
	eventually(t, "loop turns", func() bool { return a.heartbeat.Load() > first+int64(100*time.Millisecond) })
	if !a.Healthy() || a.Ready() {
		t.Errorf("healthy %v ready %v", a.Healthy(), a.Ready())
	}
	expectRoutes(t, a.routes, map[string]string{"10.244.7.0/24": "192.0.2.7"})
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	client := fake.NewClientset()
	good := Config{Client: client, NodeName: "n", ConfDir: "/x", ClusterCIDRs: prefixes("10.244.0.0/16"), DisableRoutes: true}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"client": {NodeName: "n", ConfDir: "/x", ClusterCIDRs: good.ClusterCIDRs, DisableRoutes: true},
		"node":   {Client: client, ConfDir: "/x", ClusterCIDRs: good.ClusterCIDRs, DisableRoutes: true},
		"cidr":   {Client: client, NodeName: "n", ConfDir: "/x", DisableRoutes: true},
		"handle": {Client: client, NodeName: "n", ConfDir: "/x", ClusterCIDRs: good.ClusterCIDRs},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("no %s accepted", name)
		}
	}
}

// TestAgentRoutesOff: with routing left to another engine the agent only
// writes the conflist (dual-stack here) and needs no netlink handle.
func TestAgentRoutesOff(t *testing.T) {
	client, _ := fakeClient(node("self", 1, []string{"10.244.0.0/24", "fd00:10:244::/64"}, "192.0.2.10", "2001:db8::10"))
	dir := t.TempDir()
	a, _ := startAgent(t, Config{Client: client, NodeName: "self", ConfDir: dir, DisableRoutes: true,
		ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/56"), Resync: 50 * time.Millisecond})
	eventually(t, "ready", a.Ready)
	data, err := os.ReadFile(filepath.Join(dir, ConflistName))
	if err != nil {
		t.Fatal(err)
	}
	loadRendered(t, data)
	if !strings.Contains(string(data), `"subnet": "fd00:10:244::/64"`) {
		t.Errorf("conflist:\n%s", data)
	}
}
