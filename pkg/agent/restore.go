package agent

import (
	"context"
	"log/slog"
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
	o.Logger = slog.New(&passCounter{next: o.Logger.Handler(), m: a.metrics})
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

// The messages restore.Watch logs for each pass (pkg/restore watch.go):
// one of the last three ends every pass; passError is one attachment or
// network a pass could not repair (or look at).
const (
	msgPassError    = "restore"
	msgPassFailed   = "restore pass failed"
	msgPassRepaired = "restored"
	msgPassClean    = "nothing to restore"
)

// passCounter is the watcher's logger: it counts passes, repairs and
// errors from what Watch logs, and hands every record its next handler
// wants on to it. Watch reports its passes only through its logger.
type passCounter struct {
	next slog.Handler
	m    *metrics
}

// Enabled is true at every level: a clean pass is logged at debug level,
// below what the agent prints, and still counted.
func (h *passCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h *passCounter) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case msgPassError:
		h.m.restoreErrors.Inc()
	case msgPassFailed:
		h.m.restorePasses.Inc()
		h.m.restoreErrors.Inc()
	case msgPassRepaired:
		h.m.restorePasses.Inc()
		h.m.restoreRepairs.Inc()
	case msgPassClean:
		h.m.restorePasses.Inc()
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *passCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &passCounter{next: h.next.WithAttrs(attrs), m: h.m}
}

func (h *passCounter) WithGroup(name string) slog.Handler {
	return &passCounter{next: h.next.WithGroup(name), m: h.m}
}
