package intent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/shaping"
)

// Of describes what ADD applied: the attachment's firewall state and its
// shaping (zero Limits for none).
func Of(a *firewall.Attachment, l shaping.Limits) Intent {
	in := Intent{
		Network: a.Net.Name, ContainerID: a.ContainerID, IfName: a.IfName, HostIf: a.HostIf,
		Bridge: a.Net.Bridge, Subnets: cidrs(a.Net.Subnets), IPMasq: a.Net.IPMasq,
		Isolation: a.Net.Isolation, ICC: a.Net.ICC, Internal: a.Net.Internal,
		NoMasquerade: cidrs(a.Net.NoMasquerade), IPs: cidrs(a.IPs),
	}
	if a.MAC != nil {
		in.MAC = a.MAC.String()
	}
	for _, p := range a.Ports {
		q := Port{Proto: p.Proto, HostPort: p.HostPort, ContainerPort: p.ContainerPort}
		if p.HostAddr.IsValid() {
			q.HostIP = p.HostAddr.String()
		}
		in.Ports = append(in.Ports, q)
	}
	if !l.IsZero() {
		in.Bandwidth = &Bandwidth{IngressRate: l.IngressRate, IngressBurst: l.IngressBurst,
			EgressRate: l.EgressRate, EgressBurst: l.EgressBurst}
	}
	return in
}

// Attachment is the firewall state in describes.
func (in Intent) Attachment() (*firewall.Attachment, error) {
	a := &firewall.Attachment{
		Net: firewall.Network{Name: in.Network, Bridge: in.Bridge, IPMasq: in.IPMasq,
			Isolation: in.Isolation, ICC: in.ICC, Internal: in.Internal},
		ContainerID: in.ContainerID, IfName: in.IfName, HostIf: in.HostIf,
	}
	var err error
	if a.Net.Subnets, err = prefixes(in.Subnets, true); err == nil {
		if a.Net.NoMasquerade, err = prefixes(in.NoMasquerade, true); err == nil {
			a.IPs, err = prefixes(in.IPs, false)
		}
	}
	if err == nil && in.MAC != "" {
		a.MAC, err = net.ParseMAC(in.MAC)
	}
	for _, p := range in.Ports {
		q := firewall.Port{Proto: p.Proto, HostPort: p.HostPort, ContainerPort: p.ContainerPort}
		if p.HostIP != "" && err == nil {
			q.HostAddr, err = netip.ParseAddr(p.HostIP)
		}
		a.Ports = append(a.Ports, q)
	}
	if err != nil {
		return nil, fmt.Errorf("intent of %s: %w", in.ID(), err)
	}
	return a, nil
}

// Limits is the shaping in describes (zero for none).
func (in Intent) Limits() shaping.Limits {
	b := in.Bandwidth
	if b == nil {
		return shaping.Limits{}
	}
	return shaping.Limits{IngressRate: b.IngressRate, IngressBurst: b.IngressBurst,
		EgressRate: b.EgressRate, EgressBurst: b.EgressBurst}
}

func cidrs(nets []*net.IPNet) []string {
	out := make([]string, 0, len(nets))
	for _, n := range nets {
		out = append(out, n.String())
	}
	return out
}

// prefixes parses CIDRs; masked keeps the network (a subnet), otherwise
// the address keeps its host part (a container address with its prefix).
func prefixes(list []string, masked bool) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range list {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, err
		}
		if !masked {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			n.IP = ip
		}
		out = append(out, n)
	}
	return out, nil
}
