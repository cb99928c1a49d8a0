// Command nswire-agent is nswire's Kubernetes node agent: it installs the
// nswire plugins, writes the node's conflist from its pod CIDRs, routes
// the other nodes' pod CIDRs to them (host-gw) and, unless --restore=false,
// applies nswire's firewall and shaping state of running pods again after a
// firewall reload (pkg/restore's watcher, in-process). See pkg/agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/nswire/nswire/pkg/agent"
	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/restore"
)

type options struct {
	kubeconfig, nodeName, confDir, binDir, pluginDir, healthAddr string
	bridge, ipamDataDir                                          string
	clusterCIDRs                                                 []netip.Prefix
	routes, restore                                              bool
	resync                                                       time.Duration
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	klog.SetSlogLogger(log) // client-go's own logs in the same JSON stream
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nswire-agent:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, opts, log); err != nil {
		log.Error("nswire-agent failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	var cidrs string
	fs := flag.NewFlagSet("nswire-agent", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster configuration")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.confDir, "cni-conf-dir", "/etc/cni/net.d", "where to write "+agent.ConflistName)
	fs.StringVar(&o.binDir, "cni-bin-dir", "", "install nswire and nswire-ipam here at start; empty: do not install")
	fs.StringVar(&o.pluginDir, "plugin-dir", "", "directory holding the nswire and nswire-ipam to install (default: the agent's own directory)")
	fs.StringVar(&cidrs, "cluster-cidr", "", "the cluster's pod CIDR(s), comma-separated, at most one per family")
	fs.StringVar(&o.bridge, "bridge", "nswire0", "the pods' bridge, written into the conflist")
	fs.StringVar(&o.ipamDataDir, "ipam-data-dir", "", "nswire-ipam's dataDir, written into the conflist; empty: its default, /var/lib/cni/networks")
	fs.StringVar(&o.healthAddr, "health-addr", ":9467", "serve /healthz, /readyz and /metrics here; empty: off")
	fs.BoolVar(&o.routes, "routes", true, "route other nodes' pod CIDRs (false when another routing engine does)")
	fs.BoolVar(&o.restore, "restore", true, "apply nswire's firewall and shaping state of running pods again after a firewall reload or tc change, "+
		"as nswire-restore --watch does (false when nswire-restore runs on the node)")
	fs.DurationVar(&o.resync, "resync", agent.DefaultResync, "period of the sync without Node events")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.nodeName == "" {
		return o, errors.New("--node-name (or NODE_NAME) is required")
	}
	// Checked here: a conflist nswire refuses would fail every pod.
	if err := config.ValidateIfName(o.bridge); err != nil {
		return o, fmt.Errorf("--bridge: %w", err)
	}
	if o.ipamDataDir != "" && !filepath.IsAbs(o.ipamDataDir) {
		return o, fmt.Errorf("--ipam-data-dir %q is not an absolute path", o.ipamDataDir)
	}
	var err error
	o.clusterCIDRs, err = parseCIDRs(cidrs)
	return o, err
}

// parseCIDRs parses --cluster-cidr: one prefix per family, at least one.
func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := map[bool]bool{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr: %w", err)
		}
		if seen[p.Addr().Is4()] {
			return nil, fmt.Errorf("--cluster-cidr: more than one CIDR of the family of %s", p)
		}
		seen[p.Addr().Is4()] = true
		out = append(out, p.Masked())
	}
	if len(out) == 0 {
		return nil, errors.New("--cluster-cidr is required")
	}
	return out, nil
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if err := install(o, log); err != nil {
		return err
	}
	client, err := newClient(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg := agent.Config{Client: client, NodeName: o.nodeName, ConfDir: o.confDir, ClusterCIDRs: o.clusterCIDRs,
		Bridge: o.bridge, IPAMDataDir: o.ipamDataDir, DisableRoutes: !o.routes, Resync: o.resync, Logger: log}
	if o.restore {
		cfg.Restore = &restore.Options{} // the conf dir above, this namespace, the agent's logger
	}
	if o.routes {
		if cfg.Netlink, err = netlink.NewHandle(); err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer cfg.Netlink.Close()
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if o.healthAddr != "" {
		if err := serveHealth(ctx, o.healthAddr, a.Handler(), log); err != nil {
			return err
		}
	}
	return a.Run(ctx)
}

// install copies the plugins into --cni-bin-dir before anything else, so a
// node gets the binaries matching its conflist.
func install(o options, log *slog.Logger) error {
	if o.binDir == "" {
		return nil
	}
	src := o.pluginDir
	if src == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--plugin-dir: %w", err)
		}
		src = filepath.Dir(exe)
	}
	written, err := agent.Install(src, o.binDir, "nswire", "nswire-ipam")
	if err != nil {
		return err
	}
	log.Info("plugins installed", "from", src, "to", o.binDir, "written", written)
	return nil
}

func newClient(kubeconfig string) (kubernetes.Interface, error) {
	// Both empty: in-cluster configuration (service account token and CA).
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "nswire-agent"
	return kubernetes.NewForConfig(cfg)
}

// serveHealth listens at once, so a taken port fails the start instead of
// every probe, and serves until ctx ends.
func serveHealth(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--health-addr: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("health server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return nil
}
