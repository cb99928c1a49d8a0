package plugin

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
)

// routedGatewayV4 is what the host end answers as in routed mode when IPAM
// names no gateway (Calico's choice).
var routedGatewayV4 = net.ParseIP("169.254.1.1").To4()

// plan is everything ADD will program, derived from config and IPAM before
// the first kernel change, so that CHECK can derive the same thing.
type plan struct {
	hostName, alias string
	mtu             int
	addrs           []*net.IPNet // container addresses as configured
	bridgeGWs       []*net.IPNet // bridge mode: gateway with the subnet prefix
	hostGWs         []net.IP     // routed mode: addresses of the host end
	onLink          []net.IP
	routes          []*types.Route
	v4, v6          bool
}

// maxAlias is the longest ifalias the kernel stores (IFALIASZ - 1).
const maxAlias = 255

// checkIdentity refuses, before any side effect, an attachment whose
// marker would not fit the host veth's ifalias.
func checkIdentity(n *config.Net, args *skel.CmdArgs) error {
	if _, alias := identity(n, args); len(alias) > maxAlias {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_CONTAINERID: %d bytes is too long for network %q (the marker %q must fit in %d bytes)", len(args.ContainerID), n.Name, "nswire/<network>/<containerID>/<ifname>", maxAlias), "")
	}
	return nil
}

// attachment is the identity of the call's attachment.
func attachment(n *config.Net, args *skel.CmdArgs) ident.Attachment {
	return ident.Attachment{Network: n.Name, ContainerID: args.ContainerID, IfName: args.IfName}
}

// identity is the host end's name and marker.
func identity(n *config.Net, args *skel.CmdArgs) (hostName, alias string) {
	id := attachment(n, args)
	return link.HostVethName(id), link.Alias(id)
}

// newPlan fills in gateways and routes around IPAM's answer. It also
// rewrites res (gateways, routes) into what the result will report.
func newPlan(n *config.Net, args *skel.CmdArgs, res *current.Result) (*plan, error) {
	p := &plan{mtu: n.MTU}
	p.hostName, p.alias = identity(n, args)
	if p.mtu == 0 {
		p.mtu = defaultMTU()
	}
	for _, ipc := range res.IPs {
		if err := p.addIP(n, ipc); err != nil {
			return nil, err
		}
	}
	p.routes = fillRoutes(n, res)
	res.Routes = p.routes
	return p, nil
}

func (p *plan) addIP(n *config.Net, ipc *current.IPConfig) error {
	v4 := ipc.Address.IP.To4() != nil
	p.v4, p.v6 = p.v4 || v4, p.v6 || !v4
	addr := ipc.Address
	if !n.Bridged() {
		// The container holds a host address and reaches everything through
		// the host end; the result keeps IPAM's prefix, which names the
		// network's subnet for the firewall and for chained plugins.
		addr = net.IPNet{IP: ipc.Address.IP, Mask: fullMask(v4)}
		if !v4 && ipc.Gateway != nil {
			// The host end also holds IPAM's IPv6 gateway, reached on-link,
			// so the host talks to the container from an address the
			// container routes back: fe80::1 is no source beyond the link,
			// and an internal container has no route to the host's others.
			p.hostGWs = append(p.hostGWs, ipc.Gateway)
			p.onLink = append(p.onLink, ipc.Gateway)
		}
		ipc.Gateway = routedGateway(ipc.Gateway, v4)
		p.hostGWs = append(p.hostGWs, ipc.Gateway)
		if v4 {
			p.onLink = append(p.onLink, ipc.Gateway)
		}
		p.addrs = append(p.addrs, &addr)
		return nil
	}
	if ipc.Gateway == nil {
		ipc.Gateway = nextIP(ipc.Address.IP.Mask(ipc.Address.Mask))
	}
	if ipc.Gateway.Equal(ipc.Address.IP) || !ipc.Address.Contains(ipc.Gateway) {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("ipam: gateway %s is not a usable gateway for %s", ipc.Gateway, ipc.Address.String()), "")
	}
	p.bridgeGWs = append(p.bridgeGWs, gatewayNet(ipc))
	p.addrs = append(p.addrs, &addr)
	return nil
}

// gatewayNet is the gateway with its subnet's prefix: the bridge's address.
func gatewayNet(ipc *current.IPConfig) *net.IPNet {
	return &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
}

func routedGateway(ipamGW net.IP, v4 bool) net.IP {
	if !v4 {
		return link.RoutedGatewayV6
	}
	if ipamGW != nil {
		return ipamGW
	}
	return routedGatewayV4
}

func fullMask(v4 bool) net.IPMask {
	if v4 {
		return net.CIDRMask(32, 32)
	}
	return net.CIDRMask(128, 128)
}

// fillRoutes gives gateway-less IPAM routes the family's gateway and adds a
// default route per family unless the network is internal.
func fillRoutes(n *config.Net, res *current.Result) []*types.Route {
	gw := map[bool]net.IP{}
	for _, ipc := range res.IPs {
		v4 := ipc.Address.IP.To4() != nil
		if gw[v4] == nil {
			gw[v4] = ipc.Gateway
		}
	}
	var routes []*types.Route
	hasDefault := map[bool]bool{}
	for _, r := range res.Routes {
		v4 := r.Dst.IP.To4() != nil
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			if n.Internal {
				continue
			}
			hasDefault[v4] = true
		}
		rt := *r
		if rt.GW == nil {
			rt.GW = gw[v4]
		}
		routes = append(routes, &rt)
	}
	for _, v4 := range []bool{true, false} {
		if gw[v4] != nil && !hasDefault[v4] && !n.Internal {
			routes = append(routes, &types.Route{Dst: net.IPNet{IP: zeroIP(v4), Mask: net.CIDRMask(0, len(zeroIP(v4))*8)}, GW: gw[v4]})
		}
	}
	return routes
}

func zeroIP(v4 bool) net.IP {
	if v4 {
		return net.IPv4zero.To4()
	}
	return net.IPv6zero
}

// defaultMTU is the MTU of the interface the host's default route uses, so
// containers do not fragment or black-hole behind a tunnel or jumbo uplink.
// RouteGet is a FIB lookup of a documentation address: no packet leaves. A
// local or loopback answer (the host owns that address, or has no default
// route) falls back to Ethernet's 1500.
func defaultMTU() int {
	routes, err := netlink.RouteGet(net.ParseIP("192.0.2.1"))
	if err != nil || len(routes) == 0 || routes[0].LinkIndex <= 1 || routes[0].Type == unix.RTN_LOCAL {
		return 1500
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil || l.Attrs().MTU < 68 || l.Attrs().MTU > 65535 || l.Attrs().Flags&net.FlagLoopback != 0 {
		return 1500
	}
	return l.Attrs().MTU
}

// nextIP is ip+1, the conventional gateway of a subnet.
func nextIP(ip net.IP) net.IP {
	next := append(net.IP(nil), ip...)
	for i := len(next) - 1; i >= 0; i-- {
		next[i]++
		if next[i] != 0 {
			break
		}
	}
	return next
}
