package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// sync is one idempotent pass: conflist, then routes.
func (a *Agent) sync() {
	if !a.synced() {
		return // an unsynced cache looks like a cluster without nodes: acting on it would delete every route
	}
	start := time.Now()
	nodes, err := a.lister.List(labels.Everything())
	if err == nil {
		err = errors.Join(a.syncConflist(nodes), a.syncRoutes(nodes))
	}
	a.metrics.syncDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		a.metrics.syncErrors.Inc()
		a.log.Error("sync failed; retrying at the next tick", "err", err)
		return
	}
	if a.conflistDone && a.routesDone && !a.ready.Load() {
		a.ready.Store(true)
		a.log.Info("ready: conflist written and routes converged", "took", time.Since(start).String())
	}
}

// syncConflist writes the conflist once the own Node has its pod CIDRs and
// an InternalIP. It never removes it: pods keep being wired by it.
func (a *Agent) syncConflist(nodes []*corev1.Node) error {
	self := findNode(nodes, a.cfg.NodeName)
	switch {
	case self == nil:
		a.waiting("own Node object not found")
		return nil
	case len(PodCIDRs(self)) == 0:
		a.waiting("own Node has no spec.podCIDRs yet")
		return nil
	case !hasInternalIP(self):
		a.waiting("own Node has no InternalIP yet")
		return nil
	}
	a.waiting("")
	data, err := RenderConflist(PodCIDRs(self), Network{ClusterCIDRs: a.cfg.ClusterCIDRs, Bridge: a.cfg.Bridge, IPAMDataDir: a.cfg.IPAMDataDir})
	if err != nil {
		return err
	}
	changed, err := writeAtomic(a.cfg.ConfDir, ConflistName, data, 0o644)
	if err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	if changed {
		a.metrics.conflistWrites.Inc()
		a.log.Info("wrote conflist", "path", filepath.Join(a.cfg.ConfDir, ConflistName), "podCIDRs", PodCIDRs(self))
		if earlier := shadowingConfs(a.cfg.ConfDir); len(earlier) > 0 {
			a.log.Warn("runtimes pick the first CNI config in lexical order; these come before ours", "files", earlier)
		}
	}
	a.conflistDone = true
	return nil
}

// waiting logs what the conflist waits for, once per change.
func (a *Agent) waiting(what string) {
	if what != "" && what != a.waitingFor {
		a.log.Info("waiting before writing the conflist", "node", a.cfg.NodeName, "for", what)
	}
	a.waitingFor = what
}

func (a *Agent) syncRoutes(nodes []*corev1.Node) error {
	if a.routes == nil {
		a.routesDone = true
		return nil
	}
	want, skips := DesiredRoutes(nodes, a.cfg.NodeName)
	res, err := a.routes.Sync(want)
	skips = append(skips, res.Skipped...)
	a.metrics.routes.Set(float64(res.Programmed))
	a.metrics.setSkipped(skips)
	a.report(skips, nodes)
	if err == nil {
		a.routesDone = true
	}
	return err
}

// report logs each skipped pod CIDR and sends a Warning Event to its Node,
// once per change of what is wrong rather than at every tick.
func (a *Agent) report(skips []Skip, nodes []*corev1.Node) {
	now := map[string]string{}
	for _, s := range skips {
		key := s.Node + " " + s.Dst.String()
		msg := fmt.Sprintf("nswire-agent on %s: no route to pod CIDR %s: %s", a.cfg.NodeName, s.Dst, s.Detail)
		now[key] = s.Reason + " " + msg
		if a.reported[key] == now[key] {
			continue
		}
		a.log.Warn("node skipped", "node", s.Node, "podCIDR", s.Dst, "reason", s.Reason, "detail", s.Detail)
		if n := findNode(nodes, s.Node); n != nil {
			a.recorder.Event(n, corev1.EventTypeWarning, s.Reason, msg)
		}
	}
	for key := range a.reported {
		if _, ok := now[key]; !ok {
			a.log.Info("node no longer skipped", "nodeAndPodCIDR", key)
		}
	}
	a.reported = now
}

func findNode(nodes []*corev1.Node, name string) *corev1.Node {
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func hasInternalIP(n *corev1.Node) bool {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return true
		}
	}
	return false
}

// shadowingConfs lists CNI config files that sort before ours: containerd
// and CRI-O use the first one, so ours would be ignored.
func shadowingConfs(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if name < ConflistName && !strings.HasPrefix(name, ".") && (ext == ".conf" || ext == ".conflist" || ext == ".json") {
			out = append(out, name)
		}
	}
	return out
}
