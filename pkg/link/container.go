package link

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nswire/nswire/pkg/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ContainerSpec is what the container end needs once it exists.
type ContainerSpec struct {
	IfName string
	Addrs  []*net.IPNet
	Routes []*types.Route // GW filled in
	// OnLink are gateways that are not inside any of Addrs' subnets
	// (routed mode): they get a scope-link host route first.
	OnLink []net.IP
}

// loopbackIndex is the same in every namespace: lo is always created first.
const loopbackIndex = 1

// ConfigureContainer brings lo and the container end up with addresses and
// routes. The kernel announces the new MAC itself (arp_notify,
// ndisc_notify) when the link comes up, so peers learn it at once.
// It returns the routes it installed (see addRoutes).
func ConfigureContainer(n *netns.NS, s ContainerSpec) (netlink.Link, []*types.Route, error) {
	h := n.Handle()
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loopbackIndex}}); err != nil {
		return nil, nil, fmt.Errorf("set lo up: %w", err)
	}
	l, err := h.LinkByName(s.IfName)
	if err != nil {
		return nil, nil, fmt.Errorf("look up %q in container: %w", s.IfName, err)
	}
	if err := containerSettings(n, l.Attrs().Index, s.IfName, hasV6(s.Addrs)); err != nil {
		return nil, nil, fmt.Errorf("settings of %q: %w", s.IfName, err)
	}
	for _, a := range s.Addrs {
		if err := addContainerAddr(n, l, s.IfName, a); err != nil {
			return nil, nil, err
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, nil, fmt.Errorf("set %q up: %w", s.IfName, err)
	}
	routes, err := addRoutes(h, l.Attrs().Index, s)
	if err != nil {
		return nil, nil, err
	}
	return l, routes, nil
}

// containerSettings applies, before the link goes up, arp_notify over a
// netlink socket of the container's namespace and the IPv6 settings
// (which netlink cannot set) in /proc/sys, from a thread switched into it.
//
// An interface without IPv6 addresses gets no IPv6 address generation
// either, as Docker leaves IPv6 off on IPv4-only networks. Otherwise its
// link-local address would make it send MLD reports and router
// solicitations for seconds after it comes up, each flooded by the bridge
// to every port: at 1,000 containers, 9 ms of softirq per ADD.
func containerSettings(n *netns.NS, index int, ifName string, v6 bool) error {
	sock, err := n.Route()
	if err != nil {
		return err
	}
	c := linkChange{index: index, inet: map[int]uint32{ipv4ConfArpNotify: 1}, addrGenNone: !v6, sock: sock}
	if err := c.apply(); err != nil {
		return err
	}
	if !v6 {
		return nil
	}
	// accept_dad=0 keeps even the link-local address out of the tentative
	// state, so nothing waits on DAD. accept_ra=0: routes come from IPAM
	// only. A router advertisement from another container (its own
	// link-local source passes anti-spoofing) would otherwise give this one
	// a default route through it (CVE-2020-13401; Docker does the same),
	// and the container sends no router solicitations, each flooded to
	// every port of the bridge. The link was just made: written without
	// reading first, each a single /proc/sys walk.
	return n.Do(func() error {
		for key, val := range map[string]string{"accept_dad": "0", "accept_ra": "0", "ndisc_notify": "1"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/"+key, []byte(val), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// addContainerAddr adds a to the container end. An IPv6 address refused
// because the runtime made the namespace with IPv6 disabled (Docker does
// for its IPv4-only networks) is added once IPv6 is enabled on this one
// interface, which the network gives IPv6, as the reference plugins do.
// Only then: the hot path pays no /proc/sys write for it.
func addContainerAddr(n *netns.NS, l netlink.Link, ifName string, a *net.IPNet) error {
	err := addAddr(n.Handle().AddrAdd, l, a)
	if ipv6Refused(err, a) {
		err = n.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/disable_ipv6", []byte("0"), 0o644)
		})
		if err == nil {
			err = addAddr(n.Handle().AddrAdd, l, a)
		}
	}
	if err != nil {
		return fmt.Errorf("add %s to %q: %w", a, ifName, err)
	}
	return nil
}

// addRoutes installs the on-link routes, then s.Routes, and returns the
// routes it installed. A default route that another interface already holds
// (the container's first network) is left to it and out of the result; any
// other clash is a configuration error.
func addRoutes(h *netlink.Handle, index int, s ContainerSpec) ([]*types.Route, error) {
	for _, gw := range s.OnLink {
		r := &netlink.Route{LinkIndex: index, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK}
		if err := routeAdd(h.RouteAdd, r); err != nil {
			return nil, fmt.Errorf("add on-link route to %s: %w", gw, err)
		}
	}
	installed := make([]*types.Route, 0, len(s.Routes))
	for _, rt := range s.Routes {
		r := &netlink.Route{LinkIndex: index, Dst: &rt.Dst, Gw: rt.GW, Priority: rt.Priority, MTU: rt.MTU}
		err := h.RouteAdd(r)
		switch {
		case errors.Is(err, unix.EEXIST):
			err = routeClash(h, r, index)
			if errors.Is(err, errOtherDefault) {
				continue
			}
		case errors.Is(err, unix.ENETUNREACH):
			err = types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("ipam.routes: gateway %s of route %s is not reachable from the container", rt.GW, rt.Dst.String()), "")
		case err != nil:
			err = fmt.Errorf("add route %s via %s: %w", rt.Dst.String(), rt.GW, err)
		}
		if err != nil {
			return nil, err
		}
		installed = append(installed, rt)
	}
	return installed, nil
}

var errOtherDefault = errors.New("default route held by another interface")

// routeClash explains an EEXIST: nil when the route is already ours (a
// repeated step), errOtherDefault for another interface's default route,
// a configuration error for any other destination.
func routeClash(h *netlink.Handle, r *netlink.Route, index int) error {
	routes, err := RetryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, family(r.Dst.IP)) })
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	ones, _ := r.Dst.Mask.Size()
	for _, x := range routes {
		same := (x.Dst == nil && ones == 0) || (x.Dst != nil && x.Dst.String() == r.Dst.String())
		if !same || x.Priority != r.Priority {
			continue
		}
		switch {
		case x.LinkIndex == index:
			return nil
		case ones == 0:
			return errOtherDefault
		}
	}
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("ipam.routes: the container already routes %s through another interface", r.Dst), "")
}

// routeAdd adds r; an identical route already there is success.
func routeAdd(add func(*netlink.Route) error, r *netlink.Route) error {
	err := add(r)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// hostNet is ip/32 or ip/128.
func hostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}
