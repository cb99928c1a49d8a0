package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
)

// DefaultConfDir is where runtimes read CNI network configs.
const DefaultConfDir = "/etc/cni/net.d"

// DefaultInterval is Watch's safety pass period: events do the work, the
// tick only bounds what a lost event could cost.
const DefaultInterval = 5 * time.Minute

// Options configures Restore and Watch.
type Options struct {
	ConfDir  string        // CNI network configs; "" means DefaultConfDir
	NetNSFd  int           // the containers' host namespace; 0 means the caller's
	Logger   *slog.Logger  // nil discards
	Interval time.Duration // Watch's safety pass; 0 means DefaultInterval
	// OnPass, if set, is told the outcome of each of Watch's passes (the
	// agent counts them in its metrics).
	OnPass func(Report, error)
}

func (o Options) withDefaults() Options {
	if o.ConfDir == "" {
		o.ConfDir = DefaultConfDir
	}
	if o.NetNSFd < 0 {
		o.NetNSFd = 0
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	return o
}

// Report is what one pass found and did. Each repair names the attachment
// ("network/containerID/ifName") or network and why it was needed.
type Report struct {
	Live     int      // attachments whose host veth exists
	Gone     int      // intents whose host veth is gone: left alone
	Tables   []string // nswire tables rebuilt: missing, flushed, a chain of the layout emptied
	Firewall []string // attachments whose firewall state was applied again
	Shaping  []string // attachments whose shaping was applied again
	Records  []string // networks recorded again
	Warnings []string // conf files that could not be read
	Errors   []error  // per attachment or network; the pass went on
	Took     time.Duration
}

// Repaired reports whether the pass changed anything.
func (r Report) Repaired() bool {
	return len(r.Tables)+len(r.Firewall)+len(r.Shaping)+len(r.Records) > 0
}

// Restore runs one pass (see the package doc). The error is for a pass
// that could not look at the host at all; what failed for one attachment
// or network is in Report.Errors.
func Restore(ctx context.Context, o Options) (Report, error) {
	start := time.Now()
	p := &pass{o: o.withDefaults()}
	defer p.close()
	err := p.run(ctx)
	p.report.Took = time.Since(start)
	return p.report, err
}

// pass holds the sockets of one pass, all in the host namespace, opened
// only when needed: a host without nswire networks costs a directory read.
type pass struct {
	o      Options
	h      *netlink.Handle
	fw     *firewall.Firewall
	report Report
}

func (p *pass) run(ctx context.Context) error {
	nets, warnings, err := findNetworks(p.o.ConfDir)
	p.report.Warnings = warnings
	if err != nil || len(nets) == 0 {
		return err
	}
	if p.h, err = routeHandle(p.o.NetNSFd); err != nil {
		return err
	}
	hs, err := p.scan(nets)
	if err != nil || len(hs.live) == 0 {
		return err // nothing alive: nothing to restore, and no table to create
	}
	if err := p.openFirewall(); err != nil {
		return err
	}
	d, err := p.inspect(hs, true)
	if err != nil || d.empty() {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.repair(nets)
}

// routeHandle is an rtnetlink handle in the namespace fd (0: the caller's).
func routeHandle(fd int) (*netlink.Handle, error) {
	var h *netlink.Handle
	var err error
	if fd > 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}

func (p *pass) openFirewall() error {
	var err error
	p.fw, err = firewall.New(firewall.Options{NetNSFd: p.o.NetNSFd})
	return err
}

func (p *pass) close() {
	if p.fw != nil {
		p.fw.Close()
	}
	if p.h != nil {
		p.h.Close()
	}
}

// scan reads intents and links and sets the report's counts from them.
func (p *pass) scan(nets []network) (*host, error) {
	hs, err := scan(nets, p.h)
	if err != nil {
		return nil, err
	}
	p.report.Live, p.report.Gone, p.report.Errors = len(hs.live), hs.gone, hs.errs
	return hs, nil
}

// damage is what inspect found missing, each with why.
type damage struct {
	records  []string          // live networks without a record
	networks map[string]string // network -> a network-level element missing
	firewall map[string]string // attachment -> its firewall mismatch
	shaping  map[string]string // attachment -> its shaping mismatch
}

func (d *damage) empty() bool {
	return len(d.records)+len(d.networks)+len(d.firewall)+len(d.shaping) == 0
}

// inspect compares the host with the live attachments; first stops at
// the first difference (the lock-free look that decides whether to
// repair at all). firewall.Networks rebuilds nswire's tables when they
// are not current (missing, flushed, a chain of the layout missing or
// short of rules: firewall.CheckTables), as an ADD would; what the
// rebuild dropped is then found missing below.
func (p *pass) inspect(hs *host, first bool) (*damage, error) {
	d := &damage{networks: map[string]string{}, firewall: map[string]string{}, shaping: map[string]string{}}
	stale := p.fw.CheckTables()
	if stale != nil && !errors.As(stale, new(*firewall.Mismatch)) {
		return nil, stale
	}
	recs, err := p.fw.Networks()
	if err != nil {
		return nil, err
	}
	if stale != nil {
		p.report.Tables = append(p.report.Tables, stale.Error())
		p.o.Logger.Info("tables rebuilt", "why", stale.Error())
	}
	if d.records = unrecorded(recs, hs.live); first && len(d.records) > 0 {
		return d, nil
	}
	if d.networks, err = netDamage(p.fw, hs.live); err != nil || first && len(d.networks) > 0 {
		return d, err
	}
	for i, err := range p.checkFirewall(hs.live, first) {
		if err != nil {
			p.mismatch(d.firewall, hs.live[i], err)
		}
	}
	if first && !d.empty() {
		return d, nil
	}
	return d, p.inspectShaping(hs, d, first)
}

// checkWorkers bounds the sockets firewall.Check runs on at once: the
// kernel answers each request in its sender's context, so several use
// several CPUs (300 checks: 44 ms on one socket, 27 ms on two, on 2 CPUs).
const checkWorkers = 4

// checkFirewall runs firewall.Check for each attachment; with first, the
// workers stop at the first failure (the others' results are nil).
func (p *pass) checkFirewall(live []*attachment, first bool) []error {
	fws := []*firewall.Firewall{p.fw}
	for len(fws) < min(checkWorkers, runtime.GOMAXPROCS(0), len(live)) {
		fw, err := firewall.New(firewall.Options{NetNSFd: p.o.NetNSFd})
		if err != nil {
			break // fewer workers
		}
		defer fw.Close()
		fws = append(fws, fw)
	}
	errs := make([]error, len(live))
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w, fw := range fws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(live) && !(first && failed.Load()); i += len(fws) {
				if errs[i] = fw.Check(live[i].fw); errs[i] != nil {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

// inspectShaping compares the shaped attachments with what shaping.Apply
// makes, over one dump of the namespace's qdiscs (shaping.CheckAll).
func (p *pass) inspectShaping(hs *host, d *damage, first bool) error {
	want := map[string]shaping.Limits{}
	for _, a := range hs.live {
		if !a.limits.IsZero() {
			want[a.in.HostIf] = a.limits
		}
	}
	if len(want) == 0 {
		return nil
	}
	errs, err := shaping.CheckAll(p.h, want)
	if err != nil {
		return err
	}
	for _, a := range hs.live {
		err := errs[a.in.HostIf] // none for the unshaped
		if err == nil {
			continue
		}
		if !errors.As(err, new(*link.Mismatch)) {
			p.report.Errors = append(p.report.Errors, fmt.Errorf("%s: %w", a.id(), err))
			continue
		}
		d.shaping[a.id()] = err.Error()
		if first {
			return nil
		}
	}
	return nil
}

// mismatch notes a difference, or reports a failure to look.
func (p *pass) mismatch(into map[string]string, a *attachment, err error) {
	if errors.As(err, new(*firewall.Mismatch)) {
		into[a.id()] = err.Error()
		return
	}
	p.report.Errors = append(p.report.Errors, fmt.Errorf("%s: %w", a.id(), err))
}

// repair applies again what is missing, under the network lock held
// exclusively: no ADD is in flight, so every live attachment's intent is
// its last ADD's. Everything is read again under the lock.
func (p *pass) repair(nets []network) error {
	lock, err := firewall.LockNetworks(true)
	if err != nil {
		return err
	}
	defer lock.Release()
	hs, err := p.scan(nets)
	if err != nil {
		return err
	}
	d, err := p.inspect(hs, false)
	if err != nil {
		return err
	}
	if len(d.records) > 0 {
		if err := p.record(hs.live); err != nil {
			return err
		}
	}
	for _, a := range hs.live {
		p.repairOne(a, d)
	}
	return nil
}

// repairOne re-applies a's firewall state when it or its network lost
// something, and its shaping when that differs.
func (p *pass) repairOne(a *attachment, d *damage) {
	why, fw := d.firewall[a.id()]
	if netWhy, ok := d.networks[a.in.Network]; ok && !fw {
		why, fw = netWhy, true // CheckNetwork names the network
	}
	shapeWhy, shape := d.shaping[a.id()]
	if !fw && !shape {
		return
	}
	var err error
	if fw {
		err = p.fw.Add(a.fw)
	}
	if shape && err == nil {
		err = shaping.Apply(p.h, a.in.HostIf, a.limits)
	}
	live, verr := stillLive(p.h, a)
	if verr == nil && !live {
		// A DEL removed the veth meanwhile and may have removed the
		// elements before this Add: remove them again.
		p.o.Logger.Info("attachment deleted during its repair; undone", "attachment", a.id())
		p.undo(a)
		return
	}
	err = errors.Join(err, verr)
	if err != nil {
		p.report.Errors = append(p.report.Errors, fmt.Errorf("%s: %w", a.id(), err))
		return
	}
	if fw {
		p.report.Firewall = append(p.report.Firewall, a.id()+": "+why)
		p.o.Logger.Info("firewall state applied again", "attachment", a.id(), "why", why)
	}
	if shape {
		p.report.Shaping = append(p.report.Shaping, a.id()+": "+shapeWhy)
		p.o.Logger.Info("shaping applied again", "attachment", a.id(), "why", shapeWhy)
	}
}

// undo removes what a repair of a dead attachment may have put back.
func (p *pass) undo(a *attachment) {
	err := p.fw.Del(a.fw)
	if !a.limits.IsZero() {
		err = errors.Join(err, shaping.Remove(p.h, a.in.HostIf))
	}
	if err != nil {
		p.report.Errors = append(p.report.Errors, fmt.Errorf("%s: undo the repair of a deleted attachment: %w", a.id(), err))
	}
}
