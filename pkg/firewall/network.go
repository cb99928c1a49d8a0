package firewall

import (
	"net"
	"slices"

	"github.com/google/nftables"
)

// queueNetwork asserts the network-level elements. Each ADD re-adds them
// (adding an existing element without NLM_F_EXCL is a no-op) and removes the
// ones a flag now turned off (add then delete: absent afterwards either
// way). remove drops all of them, for GC of a network with no attachments.
func queueNetwork(c *nftables.Conn, n Network, remove bool) error {
	for _, fam := range []int{4, 6} {
		var subs []*net.IPNet
		for _, s := range n.Subnets {
			if s != nil && famOf(s.IP) == fam {
				subs = append(subs, s)
			}
		}
		if len(subs) == 0 {
			continue
		}
		var single []nftables.SetElement
		for _, s := range subs {
			single = append(single, intervalElems(s, fam)...)
		}
		pairs := pairElems(subs, subs, fam)
		var noMasq []*net.IPNet
		for _, d := range n.NoMasquerade {
			if d != nil && famOf(d.IP) == fam {
				noMasq = append(noMasq, d)
			}
		}
		for _, x := range []struct {
			set  string
			els  []nftables.SetElement
			want bool
		}{
			{sN(nsNets, fam), single, true},
			{sN(nsIntra, fam), pairs, true},
			{sN(nsIso, fam), single, n.Isolation},
			{sN(nsMasq, fam), single, n.IPMasq && !n.Internal},
			{sN(nsInternal, fam), single, n.Internal},
			{sN(nsNoICC, fam), pairs, !n.ICC},
			{sN(nsNoMasq, fam), pairElems(subs, noMasq, fam), true},
		} {
			if len(x.els) == 0 {
				continue
			}
			if err := assertElems(c, setDef(inetTable, x.set), x.els, x.want && !remove); err != nil {
				return err
			}
		}
	}
	return nil
}

// pairElems encodes every (source prefix . destination prefix) pair for a
// concatenated interval set.
func pairElems(srcs, dsts []*net.IPNet, fam int) []nftables.SetElement {
	var els []nftables.SetElement
	for _, s := range srcs {
		for _, d := range dsts {
			sf, sl := bounds(s, fam)
			df, dl := bounds(d, fam)
			els = append(els, nftables.SetElement{Key: concat(sf, df), KeyEnd: concat(sl, dl)})
		}
	}
	return els
}

func assertElems(c *nftables.Conn, s *nftables.Set, els []nftables.SetElement, want bool) error {
	if err := c.SetAddElements(s, els); err != nil {
		return err
	}
	if want {
		return nil
	}
	return c.SetDeleteElements(s, els)
}

// bounds returns the first and last address of a prefix.
func bounds(n *net.IPNet, fam int) (first, last []byte) {
	ip := ipBytes(n.IP, fam)
	mask := n.Mask
	if len(mask) != len(ip) {
		mask = mask[len(mask)-len(ip):]
	}
	first, last = make([]byte, len(ip)), make([]byte, len(ip))
	for i := range ip {
		first[i] = ip[i] & mask[i]
		last[i] = ip[i] | ^mask[i]
	}
	return first, last
}

// intervalElems encodes a prefix for an rbtree interval set: start element
// and, unless the range reaches the top of the address space, an
// interval-end element at last+1.
func intervalElems(n *net.IPNet, fam int) []nftables.SetElement {
	first, last := bounds(n, fam)
	els := []nftables.SetElement{{Key: first}}
	end := slices.Clone(last)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return append(els, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return els
}
