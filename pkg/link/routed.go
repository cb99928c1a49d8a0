package link

import (
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
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
			return fmt.Errorf("add gateway %s to %q: %w", gw, host.Attrs().Name, err)
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
		if err := routeAdd(netlink.RouteAdd, r); err != nil {
			return fmt.Errorf("add host route to %s: %w", a.IP, err)
		}
	}
	return nil
}
