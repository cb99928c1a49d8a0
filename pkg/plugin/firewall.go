package plugin

import (
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/shaping"
)

// fwNetwork is the firewall's view of the network; subnets come from the
// addresses IPAM gave (the only place a delegated IPAM states them).
func fwNetwork(n *config.Net, res *current.Result) firewall.Network {
	fn := firewall.Network{
		Name: n.Name, IPMasq: n.Masquerade(), Isolation: n.Isolated(),
		ICC: n.InterContainer(), Internal: n.Internal, NoMasquerade: n.NoMasquerade,
	}
	if n.Bridged() {
		fn.Bridge = n.Bridge
	}
	if res == nil {
		return fn
	}
	for _, ipc := range res.IPs {
		fn.Subnets = append(fn.Subnets, &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask})
	}
	return fn
}

// fwAttachment describes one attachment to the firewall. res may be nil
// (DEL without prevResult): the firewall then works from the identity.
func fwAttachment(n *config.Net, containerID, ifName, hostIf string, res *current.Result) *firewall.Attachment {
	a := &firewall.Attachment{
		Net: fwNetwork(n, res), ContainerID: containerID, IfName: ifName, HostIf: hostIf,
		Ports: fwPorts(n.RuntimeConfig.PortMappings),
	}
	if res == nil {
		return a
	}
	for _, ipc := range res.IPs {
		addr := ipc.Address
		a.IPs = append(a.IPs, &addr)
	}
	if _, ifc := sandboxInterface(res, ifName); ifc != nil && n.PinMAC() {
		a.MAC, _ = net.ParseMAC(ifc.Mac)
	}
	return a
}

// fwPorts converts the portMappings capability (checked by config.Load)
// into the firewall's ports.
func fwPorts(mappings []config.PortMapping) []firewall.Port {
	var out []firewall.Port
	for _, m := range mappings {
		out = append(out, firewall.Port{Proto: m.Proto(), HostAddr: m.HostAddr(),
			HostPort: uint16(m.HostPort), ContainerPort: uint16(m.ContainerPort)})
	}
	return out
}

// limits is the bandwidth capability, zero when absent.
func limits(n *config.Net) shaping.Limits {
	b := n.RuntimeConfig.Bandwidth
	if b == nil {
		return shaping.Limits{}
	}
	return shaping.Limits{IngressRate: b.IngressRate, IngressBurst: b.IngressBurst,
		EgressRate: b.EgressRate, EgressBurst: b.EgressBurst}
}

// openFirewall acts in the plugin's own (host) namespace.
func openFirewall() (*firewall.Firewall, error) {
	return firewall.New(firewall.Options{})
}

// delFirewall removes the attachment's firewall elements.
func delFirewall(a *firewall.Attachment) error {
	fw, err := openFirewall()
	if err != nil {
		return err
	}
	defer fw.Close()
	return fw.Del(a)
}
