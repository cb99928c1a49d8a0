package testutil

import (
	"strings"

	"github.com/google/nftables"
)

// AttachmentChains lists nswire's per-attachment nftables chains (a-…,
// g-…) in the namespace: what DEL and GC must leave behind is none.
func (n *NS) AttachmentChains() []string {
	n.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		n.t.Fatalf("nftables: %v", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		n.t.Fatalf("list chains: %v", err)
	}
	var names []string
	for _, ch := range chains {
		if ch.Table.Name == "nswire" && (strings.HasPrefix(ch.Name, "a-") || strings.HasPrefix(ch.Name, "g-")) {
			names = append(names, ch.Name)
		}
	}
	return names
}

// AssertNoLeaks fails the test if the namespace still holds anything an
// attachment owns: host veths or ifbs marked by nswire, or per-attachment
// chains.
func (n *NS) AssertNoLeaks() {
	n.t.Helper()
	links, err := n.handle.LinkList()
	if err != nil {
		n.t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		if a := l.Attrs().Alias; strings.HasPrefix(a, "nswire/") || strings.HasPrefix(a, "nswire-shaping/") {
			n.t.Errorf("leaked link %s (%s)", l.Attrs().Name, a)
		}
	}
	if chains := n.AttachmentChains(); len(chains) > 0 {
		n.t.Errorf("leaked nftables chains: %v", chains)
	}
}
