package main

import (
	"fmt"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

// node is one simulated Kubernetes node: a host namespace running nswire
// for its own pod CIDR.
type node struct {
	*fixture
	lanIP net.IP
	pods  *net.IPNet
}

// TestMultiNode simulates three nodes on one L2 segment (a bridge in a
// "switch" namespace, 192.0.2.0/24), each with a pod subnet carved from the
// cluster CIDR 10.244.0.0/16 and host-gw routes to the others. Pods on
// different nodes reach each other by IP without NAT; only traffic leaving
// the cluster CIDR is masqueraded.
func TestMultiNode(t *testing.T) {
	lan := testutil.NewLAN(t)
	outside := testutil.NewNS(t)
	lan.Attach(t, outside, "192.0.2.100/24")
	testutil.Serve(t, outside, "tcp", ":9100")

	nodes := make([]*node, 3)
	for i := range nodes {
		f := newFixture(t)
		f.name = "k8s-pod-network" // the same network name on every node, as a cluster would have
		n := &node{fixture: f, lanIP: net.ParseIP(fmt.Sprintf("192.0.2.%d", i+1))}
		_, n.pods, _ = net.ParseCIDR(fmt.Sprintf("10.244.%d.0/24", i+1))
		lan.Attach(t, f.host.NS, n.lanIP.String()+"/24")
		nodes[i] = n
	}
	for _, n := range nodes {
		for _, other := range nodes {
			if other != n {
				r := &netlink.Route{Dst: other.pods, Gw: other.lanIP}
				if err := n.host.Handle().RouteAdd(r); err != nil {
					t.Fatalf("host-gw route: %v", err)
				}
			}
		}
	}
	pods := make([]*container, len(nodes))
	for i, n := range nodes {
		list := n.list("1.1.0", map[string]any{"nonMasqueradeCIDRs": []string{"10.244.0.0/16"}}, n.pods.String())
		pods[i] = n.add(list, fmt.Sprintf("pod%d", i))
		testutil.Serve(t, pods[i].ns, "tcp", ":80")
		defer n.del(list, pods[i])
	}
	for i, p := range pods {
		q := pods[(i+1)%len(pods)]
		expectAnswer(t, p.ns, "tcp", net.JoinHostPort(q.ip(true).String(), "80"), p.ip(true).String())
		expectAnswer(t, p.ns, "tcp", "192.0.2.100:9100", nodes[i].lanIP.String())
	}
}
