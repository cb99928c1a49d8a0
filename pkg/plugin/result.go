package plugin

import (
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/config"
)

// interfaces lists bridge (bridge mode), host veth and container end, in
// that order; the container end is always last.
func interfaces(br *netlink.Bridge, host, cont netlink.Link, sandbox string) []*current.Interface {
	var ifs []*current.Interface
	if br != nil {
		ifs = append(ifs, &current.Interface{Name: br.Name, Mac: br.HardwareAddr.String()})
	}
	ifs = append(ifs,
		&current.Interface{Name: host.Attrs().Name, Mac: host.Attrs().HardwareAddr.String()},
		&current.Interface{Name: cont.Attrs().Name, Mac: cont.Attrs().HardwareAddr.String(), Mtu: cont.Attrs().MTU, Sandbox: sandbox},
	)
	return ifs
}

// sandboxInterface finds the container end (ifName, with a sandbox) in a
// result; -1 when absent.
func sandboxInterface(res *current.Result, ifName string) (int, *current.Interface) {
	for i, ifc := range res.Interfaces {
		if ifc.Name == ifName && ifc.Sandbox != "" {
			return i, ifc
		}
	}
	return -1, nil
}

// setInterfaceIndex points every IP at the container end.
func setInterfaceIndex(res *current.Result) {
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(len(res.Interfaces) - 1)
	}
}

// dns prefers the runtime's dns capability, then the config, then IPAM's.
func dns(n *config.Net, fromIPAM types.DNS) types.DNS {
	if d := n.RuntimeConfig.DNS; d != nil && (len(d.Servers) > 0 || len(d.Searches) > 0 || len(d.Options) > 0) {
		return types.DNS{Nameservers: d.Servers, Search: d.Searches, Options: d.Options}
	}
	if len(n.DNS.Nameservers) > 0 || n.DNS.Domain != "" || len(n.DNS.Search) > 0 {
		return n.DNS
	}
	return fromIPAM
}
