package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/netns"
)

// Mismatch is what a check found different from what ADD made. Any other
// error of a check means the kernel could not be asked, which says nothing
// about the attachment.
type Mismatch struct{ Msg string }

func (m *Mismatch) Error() string { return m.Msg }

func mismatch(format string, args ...any) error {
	return &Mismatch{Msg: fmt.Sprintf(format, args...)}
}

// Expect is what CHECK expects of the container end.
type Expect struct {
	IfName string
	MAC    string
	MTU    int
	Addrs  []*net.IPNet
	Routes []*types.Route
}

// CheckContainer reports the first difference between the container end
// and what ADD programmed.
func CheckContainer(n *netns.NS, e Expect) error {
	h := n.Handle()
	l, err := h.LinkByName(e.IfName)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return mismatch("container interface %q is missing", e.IfName)
	}
	if err != nil {
		return fmt.Errorf("container interface %q: %w", e.IfName, err)
	}
	a := l.Attrs()
	if e.MAC != "" && a.HardwareAddr.String() != e.MAC {
		return mismatch("container interface %q has MAC %s, want %s", e.IfName, a.HardwareAddr, e.MAC)
	}
	if e.MTU != 0 && a.MTU != e.MTU {
		return mismatch("container interface %q has MTU %d, want %d", e.IfName, a.MTU, e.MTU)
	}
	if a.Flags&net.FlagUp == 0 {
		return mismatch("container interface %q is down", e.IfName)
	}
	if err := checkAddrs(h, l, e.Addrs); err != nil {
		return err
	}
	return checkRoutes(h, l, e.Routes)
}

func checkAddrs(h *netlink.Handle, l netlink.Link, want []*net.IPNet) error {
	have, err := AddrList(h, l)
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", l.Attrs().Name, err)
	}
	for _, w := range want {
		if !hasAddr(have, w) {
			return mismatch("interface %q lacks address %s", l.Attrs().Name, w)
		}
	}
	return nil
}

func hasAddr(have []netlink.Addr, w *net.IPNet) bool {
	for _, a := range have {
		if a.IP.Equal(w.IP) && a.Mask.String() == w.Mask.String() {
			return true
		}
	}
	return false
}

func checkRoutes(h *netlink.Handle, l netlink.Link, want []*types.Route) error {
	have, err := listRoutes(h, l)
	if err != nil {
		return err
	}
	for _, w := range want {
		if !hasRoute(have, w) {
			return mismatch("interface %q lacks route %s via %s", l.Attrs().Name, w.Dst.String(), w.GW)
		}
	}
	return nil
}

func listRoutes(h *netlink.Handle, l netlink.Link) ([]netlink.Route, error) {
	routes, err := RouteList(h, l)
	if err != nil {
		return nil, fmt.Errorf("list routes of %q: %w", l.Attrs().Name, err)
	}
	return routes, nil
}

func hasRoute(have []netlink.Route, w *types.Route) bool {
	ones, _ := w.Dst.Mask.Size()
	for _, r := range have {
		if r.Dst == nil {
			// The kernel reports default routes with no destination.
			if ones == 0 && (r.Gw == nil || r.Gw.Equal(w.GW)) && r.Family == family(w.Dst.IP) {
				return true
			}
			continue
		}
		if r.Dst.String() == w.Dst.String() && (w.GW == nil || r.Gw.Equal(w.GW)) {
			return true
		}
	}
	return false
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// CheckHostEnd verifies the host veth: owned, up, and on the bridge
// (masterIndex 0: routed mode, with a host route per container address).
func CheckHostEnd(name, alias string, masterIndex int, routed []*net.IPNet) error {
	l, err := OwnedLink(name, alias)
	if errors.Is(err, ErrNotOwned) {
		return mismatch("host interface %s", err)
	}
	if err != nil {
		return err
	}
	if l == nil {
		return mismatch("host interface %q is missing", name)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return mismatch("host interface %q is down", name)
	}
	if l.Attrs().MasterIndex != masterIndex {
		return mismatch("host interface %q has master index %d, want %d", name, l.Attrs().MasterIndex, masterIndex)
	}
	want := make([]*types.Route, 0, len(routed))
	for _, a := range routed {
		want = append(want, &types.Route{Dst: *hostNet(a.IP)})
	}
	return checkRoutes(hostHandle, l, want)
}

// CheckBridge verifies the bridge exists, is up and holds the gateways.
func CheckBridge(name string, gws []*net.IPNet) (*netlink.Bridge, error) {
	br, _, err := bridgeByName(name)
	var notBridge *types.Error // the name is another kind of link now
	if errors.As(err, &notBridge) {
		return nil, mismatch("%s", notBridge.Msg)
	}
	if err != nil {
		return nil, err
	}
	if br == nil {
		return nil, mismatch("bridge %q is missing", name)
	}
	if br.Flags&net.FlagUp == 0 {
		return nil, mismatch("bridge %q is down", name)
	}
	return br, checkAddrs(nil, br, gws)
}

// hostHandle acts in the caller's own namespace, like the package-level
// netlink functions, where a *Handle is required.
var hostHandle = &netlink.Handle{}
