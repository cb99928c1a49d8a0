// Package link builds and inspects the kernel objects of one attachment:
// the bridge, the veth pair, addresses, routes and per-device sysctls.
package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nswire/nswire/pkg/ident"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BridgeSpec describes the bridge a network needs.
type BridgeSpec struct {
	Name     string
	MTU      int
	Gateways []*net.IPNet // gateway address with the subnet's prefix
}

// EnsureBridge creates the bridge or adopts an existing one, brings it up
// and gives it the gateway addresses. Safe against concurrent callers.
// created reports that this call made the bridge, even when it then fails.
func EnsureBridge(s BridgeSpec) (br *netlink.Bridge, created bool, err error) {
	var conf devConf
	if br, conf, err = bridgeByName(s.Name); err != nil {
		return nil, false, err
	}
	if br == nil {
		if br, conf, created, err = createBridge(s); err != nil {
			return nil, created, err
		}
	}
	return br, created, configureBridge(br, conf, s)
}

// configureBridge works from the bridge as the kernel just reported it,
// with its settings (see linkWithConf), so an ADD on a ready bridge changes
// nothing and touches no /proc/sys file.
func configureBridge(br *netlink.Bridge, conf devConf, s BridgeSpec) error {
	// Conflicts are found before any change, so a refused ADD leaves an
	// existing bridge exactly as it was.
	missing, err := missingGateways(br, s.Gateways)
	if err != nil {
		return err
	}
	if br.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return fmt.Errorf("set bridge %q up: %w", s.Name, err)
		}
	}
	for _, gw := range missing {
		if err := addAddr(netlink.AddrAdd, br, gw); err != nil {
			return hostAddrError(err, gw, fmt.Sprintf("bridge %q", br.Name), br.Name)
		}
	}
	if hasV4(s.Gateways) {
		// Lets the host DNAT 127.0.0.1:hostPort to containers (Docker's
		// localhost ports); the firewall drops 127/8 arriving from any
		// interface but lo, which closes CVE-2020-8558.
		if err := enableInet(br.Index, conf, ipv4ConfRouteLocalnet); err != nil {
			return fmt.Errorf("bridge %q route_localnet: %w", s.Name, err)
		}
	}
	if hasV6(s.Gateways) && !conf.inet6Is(ipv6ConfAcceptRA, 0) {
		// A bridge that learns routes from RAs sent by containers is a
		// hole. Netlink cannot write this one: /proc/sys, when needed.
		if err := setSysctl("net/ipv6/conf/"+s.Name+"/accept_ra", "0"); err != nil {
			return fmt.Errorf("bridge %q accept_ra: %w", s.Name, err)
		}
	}
	return nil
}

// DeleteBridgeIfUnused removes a bridge that has no ports: the undo of a
// failed first ADD. A bridge with ports belongs to live containers.
func DeleteBridgeIfUnused(name string) error {
	br, _, err := bridgeByName(name)
	if err != nil || br == nil {
		return err
	}
	links, err := LinkList(nil)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Index {
			return nil
		}
	}
	return netlink.LinkDel(br)
}

// bridgeByName returns the bridge and its settings; a nil bridge when no
// link has the name.
func bridgeByName(name string) (*netlink.Bridge, devConf, error) {
	l, conf, err := linkWithConf(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, devConf{}, nil
	}
	if err != nil {
		return nil, devConf{}, fmt.Errorf("look up bridge %q: %w", name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, devConf{}, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("bridge: link %q exists and is a %s, not a bridge", name, l.Type()), "")
	}
	return br, conf, nil
}

func createBridge(s BridgeSpec) (*netlink.Bridge, devConf, bool, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = s.Name
	attrs.MTU = s.MTU
	attrs.Flags = net.FlagUp
	// A fixed MAC stops the bridge from taking its lowest port's address,
	// which would change every time that container goes away.
	attrs.HardwareAddr = bridgeMAC(s.Name)
	br := &netlink.Bridge{LinkAttrs: attrs}
	err := netlink.LinkAdd(br)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil, devConf{}, false, FeatureError(fmt.Sprintf("create bridge %q", s.Name), "bridge", err)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, devConf{}, false, fmt.Errorf("create bridge %q: %w", s.Name, err)
	}
	created := err == nil
	// Reload: on EEXIST another ADD won the race, and either way we want
	// the kernel's view (index, flags, settings).
	got, conf, err := bridgeByName(s.Name)
	if err == nil && got == nil {
		err = fmt.Errorf("bridge %q vanished after creation: %w", s.Name, unix.ENODEV)
	}
	return got, conf, created, err
}

func bridgeMAC(name string) net.HardwareAddr {
	sum := ident.Sum("nswire-bridge", name)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// missingGateways returns the gateways the bridge lacks.
func missingGateways(br *netlink.Bridge, gws []*net.IPNet) ([]*net.IPNet, error) {
	if len(gws) == 0 {
		return nil, nil
	}
	have, err := AddrList(nil, br)
	if err != nil {
		return nil, fmt.Errorf("list addresses of bridge %q: %w", br.Name, err)
	}
	var missing []*net.IPNet
	for _, gw := range gws {
		present, err := gatewayPresent(br.Name, have, gw)
		if err != nil {
			return nil, err
		}
		if !present {
			missing = append(missing, gw)
		}
	}
	return missing, nil
}

// gatewayPresent reports whether the bridge already holds gw, and fails when
// it holds a different address of an overlapping subnet: two networks
// fighting over one bridge would route each other's traffic.
func gatewayPresent(bridge string, have []netlink.Addr, gw *net.IPNet) (bool, error) {
	for _, a := range have {
		if a.IP.Equal(gw.IP) && a.Mask.String() == gw.Mask.String() {
			return true, nil
		}
		if a.IP.IsLinkLocalUnicast() || (a.IP.To4() == nil) != (gw.IP.To4() == nil) {
			continue
		}
		if a.Contains(gw.IP) || gw.Contains(a.IP) {
			return false, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("bridge: %q already holds %s, which conflicts with gateway %s", bridge, a.IPNet, gw), "")
		}
	}
	return false, nil
}

// addAddr adds an address usable at once: IPv6 addresses skip DAD, which
// would otherwise leave them tentative for a second or two.
func addAddr(add func(netlink.Link, *netlink.Addr) error, l netlink.Link, ipn *net.IPNet) error {
	a := &netlink.Addr{IPNet: ipn}
	if ipn.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	err := add(l, a)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func hasV4(nets []*net.IPNet) bool {
	for _, n := range nets {
		if n.IP.To4() != nil {
			return true
		}
	}
	return false
}

func hasV6(nets []*net.IPNet) bool {
	for _, n := range nets {
		if n.IP.To4() == nil {
			return true
		}
	}
	return false
}
