package firewall

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nswire/nswire/pkg/ident"
)

// Port is one published port: traffic for HostPort on the host goes to
// ContainerPort of the container's first address of the same family.
type Port struct {
	Proto string // "tcp", "udp" or "sctp"
	// HostAddr is the host address to publish on. The zero Addr means
	// every address of each family the container has; an unspecified
	// address (0.0.0.0, ::) every address of its family.
	HostAddr      netip.Addr
	HostPort      uint16
	ContainerPort uint16
}

// Network is what the firewall needs to know about one CNI network.
type Network struct {
	Name      string       // CNI network name: the identity of "this network"
	Bridge    string       // bridge name; "" in routed mode
	Subnets   []*net.IPNet // the network's subnets
	IPMasq    bool         // masquerade traffic leaving the subnets
	Isolation bool         // no traffic to/from other nswire networks
	ICC       bool         // container-to-container traffic inside the network
	Internal  bool         // nothing leaves or enters the network (no masquerade)
	// NoMasquerade are destinations reached without masquerade, such as
	// the cluster's pod CIDR on a Kubernetes node (routed between nodes).
	NoMasquerade []*net.IPNet
}

// Attachment is one container interface on a network.
type Attachment struct {
	Net         Network
	ContainerID string
	IfName      string
	HostIf      string           // host-side veth name
	IPs         []*net.IPNet     // container addresses
	MAC         net.HardwareAddr // container MAC; nil disables the MAC checks
	Ports       []Port
}

// ID is the attachment's identity.
func (a *Attachment) ID() ident.Attachment {
	return ident.Attachment{Network: a.Net.Name, ContainerID: a.ContainerID, IfName: a.IfName}
}

// ErrPortConflict is the CNI error code for a published port that another
// attachment already holds. It is the "invalid configuration" code: the
// request cannot be satisfied as given.
const ErrPortConflict = types.ErrInvalidNetworkConfig

func invalid(msg string, args ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(msg, args...), "")
}

// proto numbers for the protocols a port may be published with.
var protoNums = map[string]byte{"tcp": 6, "udp": 17, "sctp": 132}
var protoNames = map[byte]string{6: "tcp", 17: "udp", 132: "sctp"}

// validatePorts checks what the firewall relies on in each port. The
// capability's wire form (and duplicates inside the list) is checked by
// pkg/config.
func validatePorts(ports []Port) error {
	for i, p := range ports {
		field := fmt.Sprintf("portMappings[%d]", i)
		switch {
		case p.HostPort == 0:
			return invalid("%s.hostPort 0 is out of range 1-65535", field)
		case p.ContainerPort == 0:
			return invalid("%s.containerPort 0 is out of range 1-65535", field)
		case protoNums[p.Proto] == 0:
			return invalid("%s.protocol %q is not one of tcp, udp, sctp", field, p.Proto)
		case p.HostAddr.IsMulticast() || p.HostAddr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return invalid("%s.hostIP %q is not a unicast address", field, p.HostAddr)
		}
	}
	return nil
}

// family is an IP address family, numbered as nswire's set names number
// them (dnat4, nets6): 4 or 6.
type family int

const (
	ipv4 family = 4
	ipv6 family = 6
)

// families are both, in the order sets and rules are made.
var families = []family{ipv4, ipv6}

func famOf(ip net.IP) family {
	if ip.To4() != nil {
		return ipv4
	}
	return ipv6
}

// validateAttachment checks what Add needs beyond the port list.
func validateAttachment(a *Attachment) error {
	if a.Net.Name == "" || a.ContainerID == "" || a.IfName == "" {
		return invalid("firewall: network name, containerID and ifname are required")
	}
	if a.HostIf == "" || len(a.HostIf) > 15 {
		return invalid("firewall: host interface name %q is invalid", a.HostIf)
	}
	if a.Net.Bridge != "" && len(a.Net.Bridge) > 15 {
		return invalid("firewall: bridge name %q is invalid", a.Net.Bridge)
	}
	if len(a.IPs) == 0 {
		return invalid("firewall: attachment %s has no IP address", a.ContainerID)
	}
	if err := validatePorts(a.Ports); err != nil {
		return err
	}
	if a.Net.Internal && len(a.Ports) > 0 {
		return invalid("portMappings: network %q is internal, ports cannot be published", a.Net.Name)
	}
	for i, p := range a.Ports {
		for _, fam := range mappingFamilies(p) {
			if ctrIP(a, fam) == nil && p.HostAddr.IsValid() {
				return invalid("portMappings[%d].hostIP %q is IPv%d but the container has no IPv%d address", i, p.HostAddr, fam, fam)
			}
		}
	}
	return nil
}

// mappingFamilies are the address families a mapping asks for.
func mappingFamilies(p Port) []family {
	switch {
	case !p.HostAddr.IsValid():
		return families
	case p.HostAddr.Is4():
		return []family{ipv4}
	}
	return []family{ipv6}
}

// ctrIP is the container's first address of a family, the DNAT target.
func ctrIP(a *Attachment, fam family) net.IP {
	for _, n := range a.IPs {
		if n != nil && famOf(n.IP) == fam {
			if fam == ipv4 {
				return n.IP.To4()
			}
			return n.IP.To16()
		}
	}
	return nil
}
