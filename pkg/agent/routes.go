package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every route the agent makes (`ip route ... proto
// 110`). 110 (0x6e, "n" for nswire) is neither in the kernel's RTPROT_*
// list (0-18, 42, 99, 186-192) nor in iproute2's rt_protos, and no routing
// daemon common on Kubernetes nodes uses it (Calico's Felix uses 80, BIRD
// 12, FRR's zebra 11 and 186-192). The agent lists, replaces and deletes
// only routes carrying it, so routes of anyone else are never touched.
const RouteProtocol netlink.RouteProtocol = 110

// dumpAttempts bounds retries of a dump the kernel flagged as interrupted
// (NLM_F_DUMP_INTR): the route table changed mid-dump, the answer is partial.
const dumpAttempts = 10

// Routes reconciles the kernel's routes of protocol RouteProtocol in the
// main table of one network namespace (the one its handle is bound to).
type Routes struct {
	h *netlink.Handle
}

// NewRoutes returns a reconciler acting through h; the caller keeps
// ownership of h and closes it after the last Sync.
func NewRoutes(h *netlink.Handle) *Routes { return &Routes{h: h} }

// SyncResult is what one Sync left in the kernel.
type SyncResult struct {
	Programmed int    // routes of ours in place and wanted
	Skipped    []Skip // wanted routes that could not be made
}

// Sync makes the kernel hold exactly the routes of want that can be made:
// routes of ours that no NodeRoute justifies (or that point elsewhere) are
// deleted first, freeing their destination, then missing ones are added.
// A node whose address is not on a directly connected network, or whose
// destination is held by a route of another protocol, is skipped. Errors
// are joined; the next Sync retries what failed.
func (r *Routes) Sync(want []NodeRoute) (SyncResult, error) {
	have, err := r.List()
	if err != nil {
		return SyncResult{}, err
	}
	var res SyncResult
	targets := map[string]netlink.Route{}
	owners := map[string]string{} // route key -> node name
	for _, w := range want {
		route, skip := r.target(w)
		if skip != nil {
			res.Skipped = append(res.Skipped, *skip)
			continue
		}
		targets[routeKey(route)], owners[routeKey(route)] = route, w.Node
	}
	var errs []error
	for _, h := range have {
		if _, ok := targets[routeKey(h)]; ok {
			delete(targets, routeKey(h))
			res.Programmed++
		} else if err := r.h.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s via %s: %w", h.Dst, h.Gw, err))
		}
	}
	for key, t := range targets {
		skip, err := r.add(t)
		if skip != nil {
			skip.Node = owners[key]
			res.Skipped = append(res.Skipped, *skip)
		} else if err == nil {
			res.Programmed++
		}
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// List returns the routes of ours in the main table, both families.
func (r *Routes) List() ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	mask := uint64(netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE)
	var out []netlink.Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var err error
		var routes []netlink.Route
		for range dumpAttempts {
			if routes, err = r.h.RouteListFiltered(family, filter, mask); !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		out = append(out, routes...)
	}
	return out, nil
}

// target is the kernel route for w, through the interface the kernel would
// use to reach the gateway. host-gw only works when the gateway is on-link:
// a route through a router would send pod traffic to a router that knows
// nothing of pod CIDRs.
func (r *Routes) target(w NodeRoute) (netlink.Route, *Skip) {
	unreachable := func(detail string) (netlink.Route, *Skip) {
		return netlink.Route{}, &Skip{Node: w.Node, Dst: w.Dst, Gw: w.Gw, Reason: ReasonUnreachable, Detail: detail}
	}
	got, err := r.h.RouteGet(w.Gw.AsSlice())
	switch {
	case err != nil:
		return unreachable(fmt.Sprintf("no route to %s: %v", w.Gw, err))
	case len(got) == 0:
		return unreachable(fmt.Sprintf("no route to %s", w.Gw))
	case got[0].Gw != nil:
		return unreachable(fmt.Sprintf("%s is reached through the router %s, not on a directly connected network", w.Gw, got[0].Gw))
	case got[0].Type == unix.RTN_LOCAL:
		return unreachable(fmt.Sprintf("%s is an address of this host", w.Gw))
	}
	return netlink.Route{
		Dst:       prefixNet(w.Dst),
		Gw:        net.IP(w.Gw.AsSlice()),
		LinkIndex: got[0].LinkIndex,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}, nil
}

// add adds t exclusively: if the destination is already held by a route of
// another protocol (same destination and metric), the kernel refuses with
// EEXIST and that route stays as it is.
func (r *Routes) add(t netlink.Route) (*Skip, error) {
	err := r.h.RouteAdd(&t)
	if errors.Is(err, unix.EEXIST) {
		return &Skip{Dst: netPrefix(t.Dst), Gw: addrOf(t.Gw), Reason: ReasonConflict,
			Detail: "the destination is held by a route of another protocol"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("add route %s via %s: %w", t.Dst, t.Gw, err)
	}
	return nil, nil
}

// routeKey identifies a route by what the agent decides: destination,
// gateway and interface. A route differing in any of them is replaced.
func routeKey(r netlink.Route) string {
	return fmt.Sprintf("%v|%v|%d", netPrefix(r.Dst), addrOf(r.Gw), r.LinkIndex)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func netPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
