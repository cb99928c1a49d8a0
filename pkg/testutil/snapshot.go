package testutil

import (
	"fmt"
	"sort"
	"strings"
)

// Snapshot describes a namespace's links, addresses and routes, so a test
// can prove a failed operation left it exactly as before.
func (n *NS) Snapshot() string {
	n.t.Helper()
	links, err := n.handle.LinkList()
	if err != nil {
		n.t.Fatalf("list links: %v", err)
	}
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		lines = append(lines, fmt.Sprintf("link %s %s master=%d flags=%v mtu=%d", a.Name, l.Type(), a.MasterIndex, a.Flags, a.MTU))
		addrs, _ := n.handle.AddrList(l, 0)
		for _, ad := range addrs {
			lines = append(lines, fmt.Sprintf("addr %s %s", a.Name, ad.IPNet))
		}
	}
	routes, _ := n.handle.RouteList(nil, 0)
	for _, r := range routes {
		lines = append(lines, fmt.Sprintf("route %v via %v dev %d", r.Dst, r.Gw, r.LinkIndex))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
