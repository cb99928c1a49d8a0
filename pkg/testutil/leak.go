package testutil

import (
	"bytes"
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
	if els := n.PortElements(); len(els) > 0 {
		n.t.Errorf("leaked nftables elements: %v", els)
	}
}

// portSets are nswire's sets keyed by a host port name first: the
// anti-spoofing sets of both tables and the bridge icc=false set.
var portSets = map[nftables.TableFamily][]string{
	nftables.TableFamilyINet:   {"guarded", "gmac", "gip4", "gip6", "nomac"},
	nftables.TableFamilyBridge: {"guarded", "gmac", "gip4", "gip6", "nomac", "noicc"},
}

// PortElements lists the elements of nswire's per-port sets as
// "<set> <port>", one per element: each names the host port it belongs
// to, so an element whose port is not a live attachment's has leaked.
func (n *NS) PortElements() []string {
	n.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		n.t.Fatalf("nftables: %v", err)
	}
	var out []string
	for fam, sets := range portSets {
		for _, name := range sets {
			els, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: "nswire", Family: fam}, Name: name})
			if err != nil {
				continue // no table or no such set: nothing leaked there
			}
			for _, e := range els {
				if len(e.Key) >= 16 {
					out = append(out, name+" "+string(bytes.TrimRight(e.Key[:16], "\x00")))
				}
			}
		}
	}
	return out
}
