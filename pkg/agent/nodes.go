package agent

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Reasons a node's pod CIDR gets no route; each is also the reason of the
// Kubernetes Event on that Node and the label of the skipped-nodes metric.
const (
	ReasonUnreachable = "NSWireUnreachableNodeIP" // InternalIP not on a directly connected network
	ReasonNoAddress   = "NSWireNoNodeIP"          // no InternalIP of the pod CIDR's family
	ReasonConflict    = "NSWireRouteConflict"     // destination claimed by another node or held by a foreign route
)

// NodeRoute is one route the agent wants: a node's pod CIDR via its address.
type NodeRoute struct {
	Node string
	Dst  netip.Prefix
	Gw   netip.Addr
}

// Skip is a pod CIDR of a node that gets no route, and why.
type Skip struct {
	Node   string
	Dst    netip.Prefix
	Gw     netip.Addr // invalid when the node has no address of the family
	Reason string
	Detail string
}

// PodCIDRs returns a node's pod CIDRs: spec.podCIDRs, or spec.podCIDR on
// objects written before dual-stack. Unparsable entries are dropped.
func PodCIDRs(n *corev1.Node) []netip.Prefix {
	raw := n.Spec.PodCIDRs
	if len(raw) == 0 && n.Spec.PodCIDR != "" {
		raw = []string{n.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, s := range raw {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// InternalIP returns the node's first InternalIP of p's family.
func InternalIP(n *corev1.Node, p netip.Prefix) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err == nil && ip.Unmap().Is4() == p.Addr().Is4() {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// DesiredRoutes is the desired state: one route per other node and family.
// When two nodes claim one pod CIDR (a CIDR handed to a new node before
// the old Node object is gone), the newest node wins: it is the one the
// controller manager assigned it to last. A claim on self's own pod CIDR is
// never routed away from the local bridge.
func DesiredRoutes(nodes []*corev1.Node, self string) ([]NodeRoute, []Skip) {
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, newestFirst)
	claimed := map[netip.Prefix]string{}
	for _, n := range nodes {
		if n.Name == self {
			for _, p := range PodCIDRs(n) {
				claimed[p] = self
			}
		}
	}
	var want []NodeRoute
	var skips []Skip
	for _, n := range nodes {
		if n.Name == self {
			continue
		}
		for _, p := range PodCIDRs(n) {
			r, skip := routeFor(n, p, claimed)
			if skip != nil {
				skips = append(skips, *skip)
				continue
			}
			claimed[p] = n.Name
			want = append(want, r)
		}
	}
	return want, skips
}

func routeFor(n *corev1.Node, p netip.Prefix, claimed map[netip.Prefix]string) (NodeRoute, *Skip) {
	gw, ok := InternalIP(n, p)
	if owner, taken := claimed[p]; taken {
		return NodeRoute{}, &Skip{Node: n.Name, Dst: p, Gw: gw, Reason: ReasonConflict, Detail: "pod CIDR also claimed by node " + owner}
	}
	if !ok {
		return NodeRoute{}, &Skip{Node: n.Name, Dst: p, Reason: ReasonNoAddress, Detail: "no InternalIP of the pod CIDR's family"}
	}
	return NodeRoute{Node: n.Name, Dst: p, Gw: gw}, nil
}

func newestFirst(a, b *corev1.Node) int {
	if c := b.CreationTimestamp.Time.Compare(a.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}
