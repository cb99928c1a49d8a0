package agent

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /healthz (the process is alive and its sync loop turns),
// /readyz (the conflist is written and the routes converged once) and
// /metrics.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		answer(w, a.Healthy(), "sync loop stalled")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		answer(w, a.Ready(), "conflist not written or routes not converged yet")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

func answer(w http.ResponseWriter, ok bool, why string) {
	if !ok {
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// Ready reports whether the conflist has been written and the routes
// converged at least once. It stays true afterwards: a later failure keeps
// the last state in place, which still serves pods.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Healthy reports whether the sync loop finished a turn recently. The loop
// turns at every resync tick even while the API server is unreachable, so
// only a wedged loop (a netlink or file call that never returns) fails it.
func (a *Agent) Healthy() bool {
	last := time.Unix(0, a.heartbeat.Load())
	return time.Since(last) < 3*a.cfg.Resync+30*time.Second
}
