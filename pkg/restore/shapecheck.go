package restore

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/shaping"
)

// shaping.Check lists the qdiscs of a link with a dump of every qdisc of
// the namespace (the kernel filters a qdisc dump by link only under
// strict checking, which vishvananda/netlink does not ask for): 0.9 ms an
// attachment at 300 shaped attachments, O(N²) for a pass. A pass instead
// dumps the qdiscs once and checks that what shaping.Apply makes is
// there: the veth's root tbf, its ingress qdisc and redirect filter, the
// ifb and its root tbf, each at the asked rate. A loss removes; the
// bucket sizes are left to CHECK.

// qdiscs are the namespace's qdiscs by link index.
type qdiscs map[int][]netlink.Qdisc

func listQdiscs(h *netlink.Handle) (qdiscs, error) {
	var all []netlink.Qdisc
	var err error
	for range 10 {
		if all, err = h.QdiscList(nil); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list qdiscs: %w", err)
	}
	out := qdiscs{}
	for _, q := range all {
		out[q.Attrs().LinkIndex] = append(out[q.Attrs().LinkIndex], q)
	}
	return out, nil
}

// rootTbf is the rate (bytes/s) of the link's root tbf; ok false if none.
func (qs qdiscs) rootTbf(index int) (rate uint64, ok bool) {
	for _, q := range qs[index] {
		if t, is := q.(*netlink.Tbf); is && t.Parent == netlink.HANDLE_ROOT {
			return t.Rate, true
		}
	}
	return 0, false
}

func (qs qdiscs) hasIngress(index int) bool {
	for _, q := range qs[index] {
		if _, is := q.(*netlink.Ingress); is {
			return true
		}
	}
	return false
}

// shapingLoss says what of a's shaping is missing, "" if nothing.
func shapingLoss(h *netlink.Handle, qs qdiscs, links map[string]netlink.Link, a *attachment) (string, error) {
	l := a.limits
	veth := links[a.in.HostIf]
	if why := tbfLoss(qs, veth, "ingress", l.IngressRate); why != "" || l.EgressRate == 0 {
		return why, nil
	}
	ifb := links[shaping.IfbName(a.in.HostIf)]
	if ifb == nil {
		return fmt.Sprintf("shaping: ifb %s of %s is missing", shaping.IfbName(a.in.HostIf), a.in.HostIf), nil
	}
	if why := tbfLoss(qs, ifb, "egress", l.EgressRate); why != "" {
		return why, nil
	}
	if !qs.hasIngress(veth.Attrs().Index) {
		return fmt.Sprintf("shaping: no ingress qdisc on %s", a.in.HostIf), nil
	}
	filters, err := h.FilterList(veth, netlink.MakeHandle(0xffff, 0))
	if err != nil {
		return "", fmt.Errorf("shaping: list filters of %s: %w", a.in.HostIf, err)
	}
	if !redirects(filters, ifb.Attrs().Index) {
		return fmt.Sprintf("shaping: no filter on %s redirects to %s", a.in.HostIf, ifb.Attrs().Name), nil
	}
	return "", nil
}

func tbfLoss(qs qdiscs, l netlink.Link, dir string, rate uint64) string {
	if rate == 0 {
		return ""
	}
	got, ok := qs.rootTbf(l.Attrs().Index)
	switch {
	case !ok:
		return fmt.Sprintf("shaping: %s: no tbf qdisc on %s", dir, l.Attrs().Name)
	case got != rate/8:
		return fmt.Sprintf("shaping: %s: %s shapes to %d bits/s, want %d", dir, l.Attrs().Name, got*8, rate)
	}
	return ""
}

// redirects reports whether a filter sends to the ifb, and only there: a
// redirect to an ifb deleted since (index 0 or another) drops everything.
func redirects(filters []netlink.Filter, ifb int) bool {
	found := false
	for _, f := range filters {
		u, ok := f.(*netlink.U32)
		if !ok {
			continue
		}
		for _, a := range u.Actions {
			if m, ok := a.(*netlink.MirredAction); ok {
				if m.Ifindex != ifb {
					return false
				}
				found = true
			}
		}
	}
	return found
}
