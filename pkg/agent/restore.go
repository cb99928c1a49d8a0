package agent

import (
	"context"
	"time"

	"github.com/nswire/nswire/pkg/restore"
)

// Restarts of the restore watcher after it stopped on an error (it cannot
// listen, or a notification socket failed): from the first delay, doubling
// up to the last; a watcher that ran longer than that starts over.
const (
	restoreRetryFirst = time.Second
	restoreRetryMax   = time.Minute
)

// runRestore runs pkg/restore's watcher until ctx ends: a pass at start,
// one after every loss of nswire's firewall or shaping state it hears of
// (a firewall reload), one every safety interval. It is not the sync
// loop's business: it has its own goroutine and sockets, shares nothing
// with a sync, and neither health nor readiness depends on it; what goes
// wrong is logged and counted, and the watcher is restarted.
func (a *Agent) runRestore(ctx context.Context, o restore.Options) {
	if o.ConfDir == "" {
		o.ConfDir = a.cfg.ConfDir
	}
	if o.Logger == nil {
		o.Logger = a.log.With("component", "restore")
	}
	o.OnPass = a.metrics.countPass
	delay := restoreRetryFirst
	for {
		start := time.Now()
		err := restore.Watch(ctx, o)
		if ctx.Err() != nil {
			return
		}
		a.metrics.restoreErrors.Inc()
		if time.Since(start) > restoreRetryMax {
			delay = restoreRetryFirst
		}
		a.log.Error("restore watcher stopped; restarting it", "err", err, "in", delay.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, restoreRetryMax)
	}
}

// countPass counts one of the watcher's passes in the agent's metrics.
func (m *metrics) countPass(r restore.Report, err error) {
	m.restorePasses.Inc()
	if r.Repaired() {
		m.restoreRepairs.Inc()
	}
	if err != nil || len(r.Errors) > 0 {
		m.restoreErrors.Inc()
	}
}
