package link

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RoutedGatewayV6 is the link-local address the host end answers on in
// routed mode; the same on every host veth, like Calico's.
var RoutedGatewayV6 = net.ParseIP("fe80::1")

// ConfigureRoutedHost gives the host end the gateway addresses as host
// routes (/32, link-local /64) and routes each container address to it.
func ConfigureRoutedHost(host netlink.Link, gateways []net.IP, containerAddrs []*net.IPNet) error {
	for _, gw := range gateways {
		ipn := hostNet(gw)
		if gw.IsLinkLocalUnicast() {
			ipn = &net.IPNet{IP: gw, Mask: net.CIDRMask(64, 128)}
		}
		if err := addAddr(netlink.AddrAdd, host, ipn); err != nil {
			return hostAddrError(err, ipn, fmt.Sprintf("host interface %q", host.Attrs().Name), host.Attrs().Name)
		}
	}
	if slices.ContainsFunc(gateways, func(ip net.IP) bool { return ip.To4() != nil }) {
		// As on the bridge: lets the host DNAT 127.0.0.1:hostPort here.
		if err := enableInet(host.Attrs().Index, devConf{}, ipv4ConfRouteLocalnet); err != nil {
			return fmt.Errorf("%q route_localnet: %w", host.Attrs().Name, err)
		}
	}
	for _, a := range containerAddrs {
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostNet(a.IP), Scope: netlink.SCOPE_LINK}
		err := netlink.RouteAdd(r)
		if errors.Is(err, unix.EEXIST) {
			err = hostRouteClash(r)
		}
		if err != nil {
			return fmt.Errorf("add host route to %s: %w", a.IP, err)
		}
	}
	return nil
}

// hostRouteClash explains an EEXIST for host route r: nil when the route
// already goes through the host end (a repeated step), a configuration
// error when the host routes the container's address elsewhere, which
// would silently take its traffic. Listing all routes is the price of the
// rare clash only.
func hostRouteClash(r *netlink.Route) error {
	routes, err := RetryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(family(r.Dst.IP), &netlink.Route{Dst: r.Dst}, netlink.RT_FILTER_DST)
	})
	if err != nil {
		return fmt.Errorf("list routes to %s: %w", r.Dst, err)
	}
	other := "another interface"
	for _, x := range routes {
		if x.LinkIndex == r.LinkIndex {
			return nil
		}
		if l, err := netlink.LinkByIndex(x.LinkIndex); err == nil {
			other = fmt.Sprintf("interface %q", l.Attrs().Name)
		}
	}
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
		"the host already routes the container's address %s through %s: remove that route, or exclude the address from the network's ranges", r.Dst.IP, other), "")
}
