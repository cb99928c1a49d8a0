package firewall

import (
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// PortMapping is one entry of the CNI portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
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
	Ports       []PortMapping
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

// normProto lower-cases a protocol; "" means tcp as in the portmap plugin.
func normProto(p string) string {
	p = strings.ToLower(p)
	if p == "" {
		return "tcp"
	}
	return p
}

// ValidatePorts checks a portMappings list before anything changes: port
// ranges, protocols, hostIP syntax and duplicates inside the list (two
// entries that would capture the same packets).
func ValidatePorts(ports []PortMapping) error {
	type claim struct {
		proto string
		port  int
		fam   int // 4, 6
		ip    string
	}
	seen := map[claim]int{}
	for i, p := range ports {
		field := fmt.Sprintf("portMappings[%d]", i)
		if p.HostPort < 1 || p.HostPort > 65535 {
			return invalid("%s.hostPort %d is out of range 1-65535", field, p.HostPort)
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return invalid("%s.containerPort %d is out of range 1-65535", field, p.ContainerPort)
		}
		proto := normProto(p.Protocol)
		if _, ok := protoNums[proto]; !ok {
			return invalid("%s.protocol %q is not one of tcp, udp, sctp", field, p.Protocol)
		}
		var fams []int
		ipKey := ""
		if p.HostIP == "" {
			fams = []int{4, 6}
		} else {
			ip := net.ParseIP(p.HostIP)
			if ip == nil {
				return invalid("%s.hostIP %q is not an IP address", field, p.HostIP)
			}
			if ip.IsMulticast() || ip.Equal(net.IPv4bcast) {
				return invalid("%s.hostIP %q is not a unicast address", field, p.HostIP)
			}
			fam := famOf(ip)
			fams = []int{fam}
			if !ip.IsUnspecified() {
				ipKey = ip.String()
			}
		}
		for _, fam := range fams {
			// The same port published twice in one list overlaps when the
			// addresses are equal or either side is a wildcard.
			for c, j := range seen {
				if c.proto == proto && c.port == p.HostPort && c.fam == fam &&
					(c.ip == ipKey || c.ip == "" || ipKey == "") {
					return invalid("%s: hostPort %d/%s overlaps portMappings[%d]", field, p.HostPort, proto, j)
				}
			}
			seen[claim{proto, p.HostPort, fam, ipKey}] = i
		}
	}
	return nil
}

func famOf(ip net.IP) int {
	if ip.To4() != nil {
		return 4
	}
	return 6
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
	if err := ValidatePorts(a.Ports); err != nil {
		return err
	}
	if a.Net.Internal && len(a.Ports) > 0 {
		return invalid("portMappings: network %q is internal, ports cannot be published", a.Net.Name)
	}
	for i, p := range a.Ports {
		for _, fam := range mappingFamilies(p) {
			if ctrIP(a, fam) == nil && p.HostIP != "" {
				return invalid("portMappings[%d].hostIP %q is IPv%d but the container has no IPv%d address", i, p.HostIP, fam, fam)
			}
		}
	}
	return nil
}

// mappingFamilies are the address families a mapping asks for.
func mappingFamilies(p PortMapping) []int {
	if p.HostIP == "" {
		return []int{4, 6}
	}
	return []int{famOf(net.ParseIP(p.HostIP))}
}

// ctrIP is the container's first address of a family, the DNAT target.
func ctrIP(a *Attachment, fam int) net.IP {
	for _, n := range a.IPs {
		if n != nil && famOf(n.IP) == fam {
			if fam == 4 {
				return n.IP.To4()
			}
			return n.IP.To16()
		}
	}
	return nil
}
