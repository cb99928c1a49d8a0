package link

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// AttachedPort names one host end that keeps a network alive on this
// host: in bridge mode any port of its bridge (a port nswire did not make
// still carries traffic into its subnets), in routed mode a link carrying
// the network's marker. "" when there is none. A container that died
// without DEL took its veth pair with its namespace, so it counts for
// nothing.
//
// Bridge mode asks the kernel for the bridge's ports only. Routed mode
// has no such anchor and lists the host's links: pkg/plugin calls this
// only when another network's ADD needs what this one recorded.
func AttachedPort(network, bridge string) (string, error) {
	if bridge == "" {
		return markedLink(network)
	}
	br, _, err := bridgeByName(bridge)
	if err != nil || br == nil {
		return "", err
	}
	ports, err := bridgePorts(br.Index)
	if err != nil || len(ports) == 0 {
		return "", err
	}
	return ports[0], nil
}

func markedLink(network string) (string, error) {
	links, err := LinkList(nil)
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if id, ok := ParseAlias(l.Attrs().Alias); ok && id.Network == network {
			return l.Attrs().Name, nil
		}
	}
	return "", nil
}

// bridgePorts names the ports of the bridge with index master. The
// request is built by hand because netlink's LinkList cannot carry
// IFLA_MASTER, with which the kernel sends the bridge's ports alone.
func bridgePorts(master int) ([]string, error) {
	s, err := nl.GetNetlinkSocketAt(vns.None(), vns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return RetryDump(func() ([]string, error) {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(master))))
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, m := range msgs {
			l, err := netlink.LinkDeserialize(nil, m)
			if err == nil && l.Attrs().MasterIndex == master {
				names = append(names, l.Attrs().Name)
			}
		}
		return names, nil
	})
}

// ReleaseBridge takes from bridge its addresses whose prefix overlaps
// subnets: a network that no longer owns them must not route them. The bridge itself goes
// when nswire made it (its MAC says so), it has no port left and keep is
// false. A missing bridge is fine.
func ReleaseBridge(bridge string, subnets []*net.IPNet, keep bool) error {
	br, _, err := bridgeByName(bridge)
	if err != nil || br == nil {
		return err
	}
	if !keep && madeByNswire(br) {
		ports, err := bridgePorts(br.Index)
		if err != nil {
			return fmt.Errorf("list ports of bridge %q: %w", bridge, err)
		}
		if len(ports) == 0 {
			if err := netlink.LinkDel(br); err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) {
				return fmt.Errorf("delete bridge %q: %w", bridge, err)
			}
			return nil
		}
	}
	addrs, err := AddrList(nil, br)
	if err != nil {
		return fmt.Errorf("list addresses of bridge %q: %w", bridge, err)
	}
	for _, a := range addrs {
		if !overlapsAny(a.IPNet, subnets) {
			continue
		}
		if err := netlink.AddrDel(br, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from bridge %q: %w", a.IPNet, bridge, err)
		}
	}
	return nil
}

// ClearOwnBridge is ReleaseBridge keeping the bridge, for a bridge nswire
// made: one made by someone else keeps its addresses.
func ClearOwnBridge(bridge string, subnets []*net.IPNet) error {
	br, _, err := bridgeByName(bridge)
	if err != nil || br == nil || !madeByNswire(br) {
		return err
	}
	return ReleaseBridge(bridge, subnets, true)
}

// madeByNswire: nswire gives the bridges it creates a MAC derived from
// their name (createBridge).
func madeByNswire(br *netlink.Bridge) bool {
	return bytes.Equal(br.HardwareAddr, bridgeMAC(br.Name))
}

func overlapsAny(p *net.IPNet, subnets []*net.IPNet) bool {
	for _, s := range subnets {
		if s.Contains(p.IP) || p.Contains(s.IP) {
			return true
		}
	}
	return false
}
