package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics live in a registry of the agent's own, so two agents in one
// process (tests) never collide in a global registry.
type metrics struct {
	registry       *prometheus.Registry
	routes         prometheus.Gauge
	skipped        *prometheus.GaugeVec
	syncDuration   prometheus.Histogram
	syncErrors     prometheus.Counter
	conflistWrites prometheus.Counter
	restorePasses  prometheus.Counter
	restoreRepairs prometheus.Counter
	restoreErrors  prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nswire_agent_routes_programmed",
			Help: "Routes to other nodes' pod CIDRs in place after the last sync.",
		}),
		skipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nswire_agent_nodes_skipped",
			Help: "Nodes with a pod CIDR that got no route at the last sync, by reason.",
		}, []string{"reason"}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nswire_agent_sync_duration_seconds",
			Help:    "Time of one sync of the conflist and the routes.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nswire_agent_sync_errors_total",
			Help: "Syncs that failed in part; the next sync retries.",
		}),
		conflistWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nswire_agent_conflist_writes_total",
			Help: "Times the conflist was (re)written because its content changed.",
		}),
		restorePasses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nswire_agent_restore_passes_total",
			Help: "Passes of the restore watcher (at start, after a loss of nswire's firewall or shaping state, every safety interval).",
		}),
		restoreRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nswire_agent_restore_repairs_total",
			Help: "Restore passes that applied lost firewall or shaping state again.",
		}),
		restoreErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nswire_agent_restore_errors_total",
			Help: "Restore errors: a pass that failed, an attachment or network a pass could not repair, a watcher that stopped.",
		}),
	}
	m.registry.MustRegister(m.routes, m.skipped, m.syncDuration, m.syncErrors, m.conflistWrites,
		m.restorePasses, m.restoreRepairs, m.restoreErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// setSkipped counts skipped nodes (not pod CIDRs) per reason.
func (m *metrics) setSkipped(skips []Skip) {
	nodes := map[string]map[string]bool{}
	for _, reason := range []string{ReasonUnreachable, ReasonNoAddress, ReasonConflict} {
		nodes[reason] = map[string]bool{}
	}
	for _, s := range skips {
		nodes[s.Reason][s.Node] = true
	}
	for reason, set := range nodes {
		m.skipped.WithLabelValues(reason).Set(float64(len(set)))
	}
}
