// Package shaping applies the CNI bandwidth capability to a container's
// host-side veth with tc, over netlink only.
//
// Directions are the container's:
//
//   - ingress (traffic to the container) leaves the host through the host
//     veth: a tbf qdisc (handle 1:) is the veth's root qdisc;
//   - egress (traffic from the container) enters the host through the host
//     veth: an ingress qdisc (ffff:) on the veth redirects every frame with a
//     match-all u32 filter and a mirred action to an ifb device, whose root
//     qdisc is a tbf. (The kernel has no police action here, and shaping
//     queues where policing would drop, which TCP handles far better.)
//
// The ifb device is named from the host veth (IfbName) and carries the alias
// "nswire-shaping/<hostIf>", so Remove finds it from the veth name alone and
// never deletes an ifb it did not create.
//
// tbf parameters follow the reference bandwidth plugin: rate and burst
// converted to bytes, latency 25 ms. The kernel's tbf caps its bucket at
// 2^32-1 ns (4.29 s) of traffic at the rate, so a larger burst is
// programmed as that cap, which CHECK then reads back. Such bursts are
// common: containerd asks for 2^32-1 bits with every rate it derives from
// a pod's kubernetes.io/ingress-bandwidth or egress-bandwidth annotation,
// minutes to hours of traffic at usual rates.
//
// The queue (limit) is rate*latency plus one burst, as the reference has
// it, but that burst counts for at most one whole packet (80 KiB): the
// queue only fills once the bucket is empty, and then a burst-sized queue
// is pure delay. With containerd's burst the reference queues 4.29 s of
// traffic; a connection through a saturated 5 Mbit/s pod waited 0.4-1.1 s
// there, and waits 14-79 ms with this limit, the flow's goodput unchanged.
package shaping

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
)

// Limits are a container's rates in bits/s and bursts in bits (pkg/config
// decodes the bandwidth capability).
type Limits struct {
	IngressRate  uint64
	IngressBurst uint64
	EgressRate   uint64
	EgressBurst  uint64
}

// IsZero reports whether no shaping is asked for.
func (l Limits) IsZero() bool { return l == Limits{} }

const (
	latencyMs   = 25
	maxBucketNs = math.MaxUint32 // the kernel's cap on a tbf's buffer
	nsPerTick   = 64             // PSCHED_TICKS2NS: a psched tick is 64 ns
	rootHandle  = 0x00010000     // 1:
	// maxQueuedPacket bounds the largest packet the tbf queues whole: a
	// GSO packet of a veth (gso_max_size 64 KiB), which a qdisc counts
	// with the headers of each of its segments (4 KiB at MTU 1500, 16 KiB
	// at an MSS of 350). Larger packets are split to the bucket's size.
	maxQueuedPacket = 80 << 10
	aliasPrefix     = "nswire-shaping/"

	// The redirect filter's identity: u32 handle 800::800 (the first key
	// of the root hash table, which the kernel numbers 800: in a fresh
	// ingress qdisc), preference 1, every protocol. Apply replaces the
	// filter of that handle, so one left redirecting to a deleted ifb is
	// overwritten in place. Before the handle was fixed, the kernel gave
	// the first filter this same one.
	filterHandle = 0x80000800
	filterPrio   = 1
)

// IfbName is the ifb device that shapes a host veth's incoming traffic.
func IfbName(hostIf string) string {
	return "nsi" + ident.Hex(12, hostIf)
}

// tbf builds the qdisc for a rate and burst (bits/s, bits), the burst
// capped at what the kernel keeps (see the package doc).
func tbf(linkIndex int, rate, burst uint64) *netlink.Tbf {
	rateB := float64(rate / 8)
	burstB := min(float64(burst/8), rateB*maxBucketNs/1e9)
	buffer := burstB / rateB * 1e9 / nsPerTick
	limit := min(rateB*latencyMs/1000+min(burstB, maxQueuedPacket), math.MaxUint32)
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: rootHandle, Parent: netlink.HANDLE_ROOT},
		Rate:       rate / 8, Buffer: uint32(buffer), Limit: uint32(limit),
	}
}

func ingressQdisc(linkIndex int) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
}

func handle(h *netlink.Handle) *netlink.Handle {
	if h == nil {
		return &netlink.Handle{} // the caller's namespace
	}
	return h
}

// Apply shapes hostIf (in the namespace of h) to l, replacing whatever
// nswire shaping was there. Zero limits remove the shaping. l comes checked
// by pkg/config (each rate with its burst, at least 8, under 4 GiB).
func Apply(h *netlink.Handle, hostIf string, l Limits) error {
	h = handle(h)
	dev, err := h.LinkByName(hostIf)
	if err != nil {
		return fmt.Errorf("shaping: host interface %s: %w", hostIf, err)
	}
	idx := dev.Attrs().Index
	if l.IngressRate > 0 {
		if err := h.QdiscReplace(tbf(idx, l.IngressRate, l.IngressBurst)); err != nil {
			return tcError("tbf qdisc on "+hostIf, "sch_tbf", err)
		}
	} else if err := delRootTbf(h, dev); err != nil {
		return err
	}
	if l.EgressRate == 0 {
		return removeEgress(h, hostIf, dev)
	}
	ifb, err := ensureIfb(h, hostIf, dev.Attrs().MTU)
	if err != nil {
		return err
	}
	if err := h.QdiscReplace(tbf(ifb.Attrs().Index, l.EgressRate, l.EgressBurst)); err != nil {
		return tcError("tbf qdisc on "+ifb.Attrs().Name, "sch_tbf", err)
	}
	if err := ensureIngress(h, dev); err != nil {
		return tcError("ingress qdisc on "+hostIf, "sch_ingress", err)
	}
	if err := h.FilterReplace(redirectFilter(idx, ifb.Attrs().Index)); err != nil {
		return tcError("redirect filter on "+hostIf, "cls_u32 act_mirred", err)
	}
	return nil
}

// redirectFilter is the filter on the veth's ingress qdisc that sends
// every frame to the ifb (one mirred action).
func redirectFilter(linkIndex, ifbIndex int) *netlink.U32 {
	return &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: linkIndex, Parent: ingressParent,
			Handle: filterHandle, Priority: filterPrio, Protocol: unix.ETH_P_ALL},
		ClassId: netlink.MakeHandle(1, 1),
		Actions: []netlink.Action{&netlink.MirredAction{ActionAttrs: netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR, Ifindex: ifbIndex}},
	}
}

// ingressParent is the veth's ingress qdisc (ffff:), the filter's parent.
var ingressParent = netlink.MakeHandle(0xffff, 0)

// isNswireFilter reports whether f has the redirect filter's identity
// (what it redirects to is for Check to judge, and Apply replaces it).
func isNswireFilter(f netlink.Filter) bool {
	a := f.Attrs()
	_, u32 := f.(*netlink.U32)
	return u32 && a.Handle == filterHandle && a.Priority == filterPrio && a.Protocol == unix.ETH_P_ALL &&
		(a.Chain == nil || *a.Chain == 0)
}

// tcError names what failed. The kernel answers a qdisc, filter or action
// kind it does not know with ENOENT, a link kind (ifb) with EOPNOTSUPP:
// the error then names the modules to load. (A link that vanished would
// be ENODEV: the links here were just looked up or made.)
func tcError(what, modules string, err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
		return link.FeatureError("shaping: "+what, modules, err)
	}
	return fmt.Errorf("shaping: %s: %w", what, err)
}

// ensureIngress adds the ingress qdisc unless present (it cannot be
// replaced in place). With egress shaping the qdisc is nswire's and holds
// the redirect filter only: one present with any other filter (a second
// redirect, a filter of another kind, preference or chain) is made again,
// empty. That also renumbers its u32 hash table 800: for filterHandle.
//
// It adds the qdisc rather than list qdiscs, which would dump every
// link's (see Check): on a fresh veth that is all there is to do.
func ensureIngress(h *netlink.Handle, dev netlink.Link) error {
	err := h.QdiscAdd(ingressQdisc(dev.Attrs().Index))
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	filters, err := listFilters(h, dev)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(filters, func(f netlink.Filter) bool { return !isNswireFilter(f) }) {
		return nil
	}
	if err := h.QdiscDel(ingressQdisc(dev.Attrs().Index)); err != nil && !isNotFound(err) {
		return err
	}
	return h.QdiscAdd(ingressQdisc(dev.Attrs().Index))
}

// listFilters lists the filters on the ingress qdisc of link (none
// without the qdisc). The kernel dumps only that link's.
func listFilters(h *netlink.Handle, dev netlink.Link) ([]netlink.Filter, error) {
	return link.RetryDump(func() ([]netlink.Filter, error) { return h.FilterList(dev, ingressParent) })
}

func ensureIfb(h *netlink.Handle, hostIf string, mtu int) (netlink.Link, error) {
	name := IfbName(hostIf)
	l, err := h.LinkByName(name)
	if err == nil {
		if !ownedIfb(l, hostIf) {
			// EEXIST: an object in the way, as the kernel would say.
			return nil, fmt.Errorf("shaping: interface %s exists and is not nswire's: %w", name, unix.EEXIST)
		}
		if l.Attrs().Alias == "" { // half-made by a killed ADD: finish it
			if err := h.LinkSetAlias(l, aliasPrefix+hostIf); err != nil {
				return nil, err
			}
		}
		return l, h.LinkSetUp(l)
	}
	if !isNotFound(err) {
		return nil, err
	}
	err = h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, TxQLen: 0, Group: link.OwnerGroup}})
	if err != nil {
		return nil, tcError("create ifb "+name, "ifb", err)
	}
	if l, err = h.LinkByName(name); err != nil {
		return nil, err
	}
	if err := h.LinkSetAlias(l, aliasPrefix+hostIf); err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, err
	}
	return l, nil
}

// ownedIfb reports whether l is nswire's ifb for hostIf: marked, or
// created in nswire's group and killed before it was marked.
func ownedIfb(l netlink.Link, hostIf string) bool {
	a := l.Attrs()
	return a.Alias == aliasPrefix+hostIf || a.Alias == "" && a.Group == link.OwnerGroup
}

// OrphanIfbs returns nswire's ifbs whose host veth no longer exists.
func OrphanIfbs(links []netlink.Link) []string {
	names := map[string]bool{}
	for _, l := range links {
		names[l.Attrs().Name] = true
	}
	var out []string
	for _, l := range links {
		if target, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix); ok && !names[target] && l.Type() == "ifb" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// RemoveIfb deletes an orphaned ifb found by OrphanIfbs.
func RemoveIfb(h *netlink.Handle, name string) error {
	h = handle(h)
	l, err := h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if !strings.HasPrefix(l.Attrs().Alias, aliasPrefix) {
		return nil
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

// delRootTbf deletes the tbf Apply puts at the root of dev, if it is
// there. It lists qdiscs (every link's, see Check) because a delete
// request cannot be limited to a kind through vishvananda/netlink, and a
// root qdisc of someone else's at the same handle must stay. Only an ADD
// with an egress rate and no ingress rate pays it.
func delRootTbf(h *netlink.Handle, dev netlink.Link) error {
	qs, err := h.QdiscList(dev)
	if err != nil {
		return fmt.Errorf("shaping: list qdiscs of %s: %w", dev.Attrs().Name, err)
	}
	for _, q := range qs {
		if t, ok := q.(*netlink.Tbf); ok && t.Parent == netlink.HANDLE_ROOT && t.Handle == rootHandle {
			if err := h.QdiscDel(t); err != nil && !isNotFound(err) {
				return fmt.Errorf("shaping: delete tbf of %s: %w", dev.Attrs().Name, err)
			}
		}
	}
	return nil
}

func removeEgress(h *netlink.Handle, hostIf string, dev netlink.Link) error {
	var errs []error
	if dev != nil {
		if err := h.QdiscDel(ingressQdisc(dev.Attrs().Index)); err != nil && !isNotFound(err) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("shaping: delete ingress qdisc of %s: %w", hostIf, err))
		}
	}
	if ifb, err := h.LinkByName(IfbName(hostIf)); err == nil {
		if ownedIfb(ifb, hostIf) {
			if err := h.LinkDel(ifb); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("shaping: delete %s: %w", ifb.Attrs().Name, err))
			}
		}
	} else if !isNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Remove deletes nswire's shaping of hostIf. A missing veth or ifb is
// success; the ifb is deleted even when the veth is already gone.
func Remove(h *netlink.Handle, hostIf string) error {
	h = handle(h)
	dev, err := h.LinkByName(hostIf)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("shaping: host interface %s: %w", hostIf, err)
	}
	var errs []error
	if err == nil {
		errs = append(errs, delRootTbf(h, dev))
	} else {
		dev = nil
	}
	errs = append(errs, removeEgress(h, hostIf, dev))
	return errors.Join(errs...)
}

// Check verifies that hostIf is shaped exactly as l asks (and not at all
// for zero limits), naming the first difference as a *link.Mismatch.
//
// It looks up two links, and with a rate reads the namespace's qdiscs in
// one dump and with an egress rate the veth's filters. That qdisc dump
// holds every link's: the kernel filters no qdisc dump by link, strict
// checking or not, and a qdisc get request, which would look at one,
// announces the qdisc to every tc listener as if it had changed. To check
// many links, CheckAll shares one dump among them.
func Check(h *netlink.Handle, hostIf string, l Limits) error {
	h = handle(h)
	veth, err := lookup(h, hostIf)
	if err != nil {
		return fmt.Errorf("shaping: host interface %s: %w", hostIf, err)
	}
	ifb, err := lookup(h, IfbName(hostIf))
	if err != nil {
		return fmt.Errorf("shaping: ifb %s of %s: %w", IfbName(hostIf), hostIf, err)
	}
	return (&checker{h: h}).check(hostIf, veth, ifb, l)
}

// CheckAll checks each host veth of want against its limits as Check
// does, over one dump of the namespace's links and one of its qdiscs
// (plus a dump of each egress-shaped veth's filters, which the kernel
// limits to that veth). It returns the error of each host veth that
// differs (a *link.Mismatch) or could not be checked, none for those
// shaped as asked; the error is for a dump that failed.
func CheckAll(h *netlink.Handle, want map[string]Limits) (map[string]error, error) {
	h = handle(h)
	links, err := link.RetryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("shaping: list links: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	c := &checker{h: h}
	for _, l := range want {
		if l.IngressRate > 0 || l.EgressRate > 0 {
			if err := c.load(); err != nil {
				return nil, err
			}
			break
		}
	}
	out := map[string]error{}
	for hostIf, l := range want {
		if err := c.check(hostIf, byName[hostIf], byName[IfbName(hostIf)], l); err != nil {
			out[hostIf] = err
		}
	}
	return out, nil
}

// lookup is the link named name, nil when there is none.
func lookup(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil, nil
	}
	return l, err
}

// checker compares links with what Apply makes, reading the namespace's
// qdiscs once, when first needed.
type checker struct {
	h  *netlink.Handle
	qs map[int][]netlink.Qdisc // by link index; nil until loaded
}

func (c *checker) load() error {
	if c.qs != nil {
		return nil
	}
	all, err := link.RetryDump(func() ([]netlink.Qdisc, error) { return c.h.QdiscList(nil) })
	if err != nil {
		return fmt.Errorf("shaping: list qdiscs: %w", err)
	}
	c.qs = map[int][]netlink.Qdisc{}
	for _, q := range all {
		c.qs[q.Attrs().LinkIndex] = append(c.qs[q.Attrs().LinkIndex], q)
	}
	return nil
}

func (c *checker) qdiscs(dev netlink.Link) ([]netlink.Qdisc, error) {
	if err := c.load(); err != nil {
		return nil, err
	}
	return c.qs[dev.Attrs().Index], nil
}

// check compares hostIf's veth and ifb (nil: missing) with l.
func (c *checker) check(hostIf string, veth, ifb netlink.Link, l Limits) error {
	if veth == nil {
		return mismatch("shaping: host interface %s is missing", hostIf)
	}
	if err := c.checkTbf(veth, "ingress", l.IngressRate, l.IngressBurst); err != nil {
		return err
	}
	switch {
	case l.EgressRate == 0 && ifb != nil:
		return mismatch("shaping: bandwidth.egressRate is not set but %s shapes %s", ifb.Attrs().Name, hostIf)
	case l.EgressRate == 0:
		return nil
	case ifb == nil:
		return mismatch("shaping: bandwidth.egressRate: ifb %s of %s is missing", IfbName(hostIf), hostIf)
	}
	if err := c.checkTbf(ifb, "egress", l.EgressRate, l.EgressBurst); err != nil {
		return err
	}
	qs, err := c.qdiscs(veth)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { _, ok := q.(*netlink.Ingress); return ok }) {
		return mismatch("shaping: bandwidth.egressRate: no ingress qdisc on %s", hostIf)
	}
	filters, err := listFilters(c.h, veth)
	if err != nil {
		return fmt.Errorf("shaping: list filters of %s: %w", hostIf, err)
	}
	return checkFilters(hostIf, ifb, filters)
}

// checkFilters requires the veth's ingress qdisc to hold nswire's
// redirect filter and no other: a filter ahead of it, or one it lets
// through, would decide where the container's frames go.
func checkFilters(hostIf string, ifb netlink.Link, filters []netlink.Filter) error {
	var ours *netlink.U32
	for _, f := range filters {
		if !isNswireFilter(f) {
			return mismatch("shaping: bandwidth.egressRate: %s has a %s filter (pref %d, handle %s) besides nswire's redirect to %s",
				hostIf, f.Type(), f.Attrs().Priority, filterID(f), ifb.Attrs().Name)
		}
		ours = f.(*netlink.U32)
	}
	if ours == nil {
		return mismatch("shaping: bandwidth.egressRate: no filter on %s redirects to %s", hostIf, ifb.Attrs().Name)
	}
	if why := redirectDiff(ours, ifb.Attrs().Index); why != "" {
		return mismatch("shaping: bandwidth.egressRate: the filter on %s %s instead of redirecting every frame to %s (ifindex %d)",
			hostIf, why, ifb.Attrs().Name, ifb.Attrs().Index)
	}
	return nil
}

// redirectDiff says how u differs from a redirect of every frame to the
// link ifbIndex, "" if it does not. Every action must be that redirect:
// filters made before the handle was fixed carry it twice.
func redirectDiff(u *netlink.U32, ifbIndex int) string {
	if u.Sel == nil || u.Link != 0 || u.Police != nil {
		return "does not match every frame"
	}
	for _, k := range u.Sel.Keys {
		if k.Mask != 0 {
			return "does not match every frame"
		}
	}
	if len(u.Actions) == 0 {
		return "has no action"
	}
	for _, a := range u.Actions {
		m, ok := a.(*netlink.MirredAction)
		switch {
		case !ok:
			return "has a " + a.Type() + " action"
		case m.MirredAction != netlink.TCA_EGRESS_REDIR:
			return fmt.Sprintf("mirrors to ifindex %d", m.Ifindex)
		case m.Ifindex == 0:
			return "redirects to a deleted link"
		case m.Ifindex != ifbIndex:
			return fmt.Sprintf("redirects to ifindex %d", m.Ifindex)
		}
	}
	return ""
}

// filterID is a filter's handle as tc prints it.
func filterID(f netlink.Filter) string {
	h := f.Attrs().Handle
	if f.Type() == "u32" {
		return fmt.Sprintf("%x:%x:%x", h>>20, h>>12&0xff, h&0xfff)
	}
	return fmt.Sprintf("%#x", h)
}

func mismatch(format string, args ...any) error {
	return &link.Mismatch{Msg: fmt.Sprintf(format, args...)}
}

// checkTbf compares the root qdisc of link with the tbf for rate and
// burst. Without a rate it judges nothing: a tbf there is a chained
// plugin's (bandwidth).
func (c *checker) checkTbf(dev netlink.Link, dir string, rate, burst uint64) error {
	if rate == 0 {
		return nil
	}
	qs, err := c.qdiscs(dev)
	if err != nil {
		return err
	}
	var got *netlink.Tbf
	for _, q := range qs {
		if t, ok := q.(*netlink.Tbf); ok && t.Parent == netlink.HANDLE_ROOT {
			got = t
		}
	}
	name := dev.Attrs().Name
	if got == nil {
		return mismatch("shaping: bandwidth.%sRate %d: no tbf qdisc on %s", dir, rate, name)
	}
	want := tbf(0, rate, burst)
	if got.Rate != want.Rate {
		return mismatch("shaping: bandwidth.%sRate: %s shapes to %d bits/s, want %d", dir, name, got.Rate*8, rate)
	}
	if d := int64(got.Buffer) - int64(want.Buffer); d > 1 || d < -1 {
		return mismatch("shaping: bandwidth.%sBurst: %s has buffer %d ticks, want %d (burst %d bits)", dir, name, got.Buffer, want.Buffer, burst)
	}
	return nil
}
