// Package agent is nswire's node agent: it watches Node objects, writes
// the node's own conflist from its pod CIDRs, and routes every other
// node's pod CIDR to that node's InternalIP (host-gw). It reconciles, it
// does not script: desired state comes from the informer cache, actual
// state from the kernel, and one idempotent sync runs on any Node event or
// resync tick. It owns only its conflist file and the routes marked with
// RouteProtocol, and leaves both in place when it stops.
//
// With Config.Restore set, it also runs pkg/restore's watcher in-process,
// beside the sync loop and independent of it: after a firewall reload (or
// a tc command) takes nswire's state from running pods, their published
// ports, masquerade, isolation and shaping come back within milliseconds.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/nswire/nswire/pkg/restore"
)

// DefaultResync is how often the agent re-checks the kernel without a Node
// event, as flannel's host-gw does: a route deleted by hand comes back.
const DefaultResync = 10 * time.Second

// Config is what an Agent needs. Client, NodeName, ConfDir and
// ClusterCIDRs are required, and Netlink unless DisableRoutes is set.
type Config struct {
	Client        kubernetes.Interface
	NodeName      string
	ConfDir       string          // the conflist goes to ConfDir/ConflistName
	ClusterCIDRs  []netip.Prefix  // reached without masquerade
	Bridge        string          // the pods' bridge; "" means nswire0
	IPAMDataDir   string          // nswire-ipam's dataDir; "" means its default
	Netlink       *netlink.Handle // namespace of the routes; the caller closes it after Run
	DisableRoutes bool            // another routing engine carries pod CIDR routes
	Resync        time.Duration   // 0 means DefaultResync
	Logger        *slog.Logger    // nil means slog.Default()

	// Restore, when set, runs restore.Watch with these options while the
	// agent runs: nswire's firewall and shaping state of running pods is
	// applied again after a firewall reload. ConfDir "" means the agent's
	// ConfDir, Logger nil the agent's; NetNSFd 0 is the caller's
	// namespace (as for the plugins, the host's). nil: no watcher.
	Restore *restore.Options
}

// Agent is one node's agent. Run it once.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	routes    *Routes // nil when routing is off
	metrics   *metrics
	kick      chan struct{} // one pending sync at most: events coalesce
	heartbeat atomic.Int64  // unix nanoseconds of the loop's last turn
	ready     atomic.Bool

	// Owned by the sync loop alone.
	lister       corelisters.NodeLister
	synced       cache.InformerSynced
	recorder     record.EventRecorder
	conflistDone bool
	routesDone   bool
	waitingFor   string
	reported     map[string]string // skipped node+CIDR -> what was reported
}

// New checks cfg and returns an agent that has not started yet.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("agent: no Kubernetes client")
	case cfg.NodeName == "":
		return nil, errors.New("agent: no node name")
	case cfg.ConfDir == "":
		return nil, errors.New("agent: no CNI conf dir")
	case len(cfg.ClusterCIDRs) == 0:
		return nil, errors.New("agent: no cluster CIDR (pods on other nodes would be masqueraded)")
	case cfg.Netlink == nil && !cfg.DisableRoutes:
		return nil, errors.New("agent: no netlink handle for the routes")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, metrics: newMetrics(), kick: make(chan struct{}, 1), reported: map[string]string{}}
	if !cfg.DisableRoutes {
		a.routes = NewRoutes(cfg.Netlink)
	}
	a.heartbeat.Store(time.Now().UnixNano())
	return a, nil
}

// Run watches Nodes and syncs until ctx ends, then returns nil. An API
// server that cannot be reached (at start or later) is not an error:
// client-go retries with backoff while the last state stays in place.
func (a *Agent) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(a.cfg.Client, 0) // resync is our own tick, from the cache
	nodes := factory.Core().V1().Nodes()
	informer := nodes.Informer()
	if _, err := informer.AddEventHandler(a.eventHandler()); err != nil {
		return err
	}
	a.lister, a.synced = nodes.Lister(), informer.HasSynced
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.cfg.Client.CoreV1().Events("")})
	a.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "nswire-agent", Host: a.cfg.NodeName})
	defer broadcaster.Shutdown()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if a.cfg.Restore != nil {
		// Its own goroutine: a pass never delays a sync, and Run waits
		// for a pass under way to end before it returns.
		var wg sync.WaitGroup
		wg.Go(func() { a.runRestore(ctx, *a.cfg.Restore) })
		defer wg.Wait()
	}
	go func() {
		// An empty cluster sends no Add event; sync once the list is in.
		if cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
			a.trigger()
		}
	}()
	a.log.Info("nswire-agent started", "node", a.cfg.NodeName, "confDir", a.cfg.ConfDir,
		"routes", a.routes != nil, "restore", a.cfg.Restore != nil, "resync", a.cfg.Resync.String())
	a.loop(ctx)
	a.log.Info("nswire-agent stopping; conflist and routes stay in place")
	return nil
}

// loop is the single worker: one sync per kick or tick.
func (a *Agent) loop(ctx context.Context) {
	tick := time.NewTicker(a.cfg.Resync)
	defer tick.Stop()
	for {
		a.heartbeat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-tick.C:
		}
		a.sync()
	}
}

// trigger asks for a sync; a sync already pending covers this one.
func (a *Agent) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) eventHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.trigger() },
		UpdateFunc: func(old, cur any) {
			// Status updates (conditions, heartbeats) change nothing we use.
			if routingView(old) != routingView(cur) {
				a.trigger()
			}
		},
		DeleteFunc: func(any) { a.trigger() },
	}
}

// routingView is what of a Node the agent acts on.
func routingView(obj any) string {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return ""
	}
	view := n.Name
	for _, p := range PodCIDRs(n) {
		ip, _ := InternalIP(n, p)
		view += " " + p.String() + "=" + ip.String()
	}
	return view
}
