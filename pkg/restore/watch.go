package restore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Debouncing: a pass starts once notifications have been quiet for
// settleQuiet, and at most settleMax after the first one. A reload is a
// few transactions in quick succession; one pass serves them all.
const (
	settleQuiet = 20 * time.Millisecond
	settleMax   = 100 * time.Millisecond
	retryFirst  = time.Second // after a pass with errors, doubling up to Interval
)

// Watch runs a pass, then one after every loss it hears of (see the
// package doc) and every o.Interval, until ctx ends. It returns an error
// only when it cannot listen.
func Watch(ctx context.Context, o Options) error {
	o = o.withDefaults()
	w, err := startWatcher(o)
	if err != nil {
		return err
	}
	defer w.close()
	return w.loop(ctx)
}

type watcher struct {
	o       Options
	nft, rt *netlink.Conn
	h       *vnl.Handle
	events  chan string // why a pass is needed
	failed  chan error  // a reader stopped
	readers sync.WaitGroup
}

// startWatcher subscribes before the first pass, so nothing that happens
// during it is missed.
func startWatcher(o Options) (*watcher, error) {
	w := &watcher{o: o, events: make(chan string, 64), failed: make(chan error, 2)}
	var err error
	if w.h, err = routeHandle(o.NetNSFd); err != nil {
		return nil, err
	}
	if w.nft, err = listen(unix.NETLINK_NETFILTER, o.NetNSFd, unix.NFNLGRP_NFTABLES); err == nil {
		w.rt, err = listen(unix.NETLINK_ROUTE, o.NetNSFd, unix.RTNLGRP_TC, unix.RTNLGRP_LINK)
	}
	if err != nil {
		w.close()
		return nil, err
	}
	nft := &nftEvents{own: ownThread}
	tc := &tcEvents{h: w.h}
	w.readers.Add(2)
	go func() {
		defer w.readers.Done()
		w.failed <- fmt.Errorf("nftables events: %w", read(w.nft, nft.handle, w.trigger))
	}()
	go func() {
		defer w.readers.Done()
		w.failed <- fmt.Errorf("rtnetlink events: %w", read(w.rt, tc.handle, w.trigger))
	}()
	return w, nil
}

// close stops the readers (closing a socket ends its Receive), then
// closes the handle they look links up with.
func (w *watcher) close() {
	for _, c := range []*netlink.Conn{w.nft, w.rt} {
		if c != nil {
			c.Close()
		}
	}
	w.readers.Wait()
	if w.h != nil {
		w.h.Close()
	}
}

// trigger never blocks a reader: a full queue already holds a pass.
func (w *watcher) trigger(why string) {
	select {
	case w.events <- why:
	default:
	}
}

func (w *watcher) loop(ctx context.Context) error {
	tick := time.NewTicker(w.o.Interval)
	defer tick.Stop()
	retry := newBackoff(w.o.Interval)
	retry.after(w.pass(ctx, []string{"start"}))
	for {
		var whys []string
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.failed:
			return err
		case why := <-w.events:
			whys = w.settle(ctx, why)
		case <-tick.C:
			whys = []string{"safety pass"}
		case <-retry.c:
			whys = []string{"retry after errors"}
		}
		if ctx.Err() != nil {
			return nil
		}
		retry.after(w.pass(ctx, whys))
	}
}

// settle gathers the notifications that follow the first one.
func (w *watcher) settle(ctx context.Context, first string) []string {
	whys := []string{first}
	deadline := time.NewTimer(settleMax)
	defer deadline.Stop()
	quiet := time.NewTimer(settleQuiet)
	defer quiet.Stop()
	for {
		select {
		case why := <-w.events:
			whys = append(whys, why)
			quiet.Reset(settleQuiet)
		case <-quiet.C:
			return whys
		case <-deadline.C:
			return whys
		case <-ctx.Done():
			return whys
		}
	}
}

// pass runs Restore and logs it; it reports whether it went without
// errors.
func (w *watcher) pass(ctx context.Context, whys []string) bool {
	r, err := Restore(ctx, w.o)
	if w.o.OnPass != nil {
		w.o.OnPass(r, err)
	}
	log := w.o.Logger.With("trigger", summary(whys), "took", r.Took.String(), "live", r.Live)
	for _, e := range r.Errors {
		log.Warn("restore", "err", e)
	}
	switch {
	case err != nil:
		log.Error("restore pass failed", "err", err)
	case r.Repaired():
		log.Info("restored", "tables", len(r.Tables), "firewall", len(r.Firewall), "shaping", len(r.Shaping), "records", len(r.Records))
	default:
		log.Debug("nothing to restore")
	}
	return err == nil && len(r.Errors) == 0
}

func summary(whys []string) string {
	if len(whys) == 1 {
		return whys[0]
	}
	return fmt.Sprintf("%s (and %d more)", whys[0], len(whys)-1)
}

// backoff schedules a retry after a pass with errors.
type backoff struct {
	c        <-chan time.Time
	next, hi time.Duration
}

func newBackoff(hi time.Duration) *backoff { return &backoff{next: retryFirst, hi: hi} }

func (b *backoff) after(ok bool) {
	if ok {
		b.c, b.next = nil, retryFirst
		return
	}
	b.c = time.After(b.next)
	b.next = min(2*b.next, b.hi)
}
