package restore

import (
	"bytes"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"

	"github.com/nswire/nswire/pkg/firewall"
)

// The network-level elements (masquerade, isolation, intra-network pairs)
// are asserted by every ADD of a network, and firewall.Check does not look
// at them: a flushed masq4 leaves every attachment "as Add made it". This
// file checks them from one dump per set, mirroring what firewall.Add
// asserts (pkg/firewall network.go: networkAsserts, intervalElems,
// pairElems). It is a stop-gap until pkg/firewall exports such a check.

// netElem is one interval of a network-level set: its start (and, in a
// concatenated set, its end) as the kernel stores them.
type netElem struct {
	set         string
	key, keyEnd []byte
}

func (e netElem) id() string { return e.set + "\x00" + string(e.key) + "\x00" + string(e.keyEnd) }

// want is whether the latest ADD touching an element wanted it, and the
// network of that ADD.
type want struct {
	on      bool
	network string
	elem    netElem
}

// netElems lists the elements firewall.Add asserts for n, each with
// whether n wants it present.
func netElems(n firewall.Network) []want {
	var out []want
	for _, fam := range []int{4, 6} {
		subs, noMasq := ofFamily(n.Subnets, fam), ofFamily(n.NoMasquerade, fam)
		if len(subs) == 0 {
			continue
		}
		single, pairs := starts(subs, fam), pairStarts(subs, subs, fam)
		for _, s := range []struct {
			base string
			els  []netElem
			on   bool
		}{
			{"nets", single, true},
			{"intra", pairs, true},
			{"iso", single, n.Isolation},
			{"masq", single, n.IPMasq && !n.Internal},
			{"internal", single, n.Internal},
			{"noicc", pairs, !n.ICC},
			{"nomasq", pairStarts(subs, noMasq, fam), true},
		} {
			for _, e := range s.els {
				e.set = fmt.Sprintf("%s%d", s.base, fam)
				out = append(out, want{on: s.on, network: n.Name, elem: e})
			}
		}
	}
	return out
}

// wanted replays the ADDs of the live attachments in creation order: an
// element's last assertion wins, as it did in the kernel.
func wanted(live []*attachment) map[string]want {
	out := map[string]want{}
	for _, a := range live {
		for _, w := range netElems(a.fw.Net) {
			out[w.elem.id()] = w
		}
	}
	return out
}

// netDamage returns, per network, the first wanted element missing from
// its set. c reads nswire's inet table.
func netDamage(c *nftables.Conn, live []*attachment) (map[string]string, error) {
	present := map[string][]nftables.SetElement{}
	damaged := map[string]string{}
	for _, w := range wanted(live) {
		if !w.on || damaged[w.network] != "" {
			continue
		}
		els, ok := present[w.elem.set]
		if !ok {
			var err error
			els, err = c.GetSetElements(&nftables.Set{Table: inetTable, Name: w.elem.set})
			if err != nil {
				return nil, fmt.Errorf("list set inet %s %s: %w", firewall.TableName, w.elem.set, err)
			}
			present[w.elem.set] = els
		}
		if !holds(els, w.elem) {
			damaged[w.network] = fmt.Sprintf("an element of set inet %s %s is missing", firewall.TableName, w.elem.set)
		}
	}
	return damaged, nil
}

var inetTable = &nftables.Table{Name: firewall.TableName, Family: nftables.TableFamilyINet}

func holds(els []nftables.SetElement, e netElem) bool {
	return slices.ContainsFunc(els, func(x nftables.SetElement) bool {
		if e.keyEnd == nil {
			return !x.IntervalEnd && bytes.Equal(x.Key, e.key)
		}
		return bytes.Equal(x.Key, e.key) && bytes.Equal(x.KeyEnd, e.keyEnd)
	})
}

func ofFamily(nets []*net.IPNet, fam int) []*net.IPNet {
	var out []*net.IPNet
	for _, n := range nets {
		if n != nil && (n.IP.To4() != nil) == (fam == 4) {
			out = append(out, n)
		}
	}
	return out
}

// starts are the interval starts of prefixes in a plain interval set.
func starts(nets []*net.IPNet, fam int) []netElem {
	var out []netElem
	for _, n := range nets {
		first, _ := bounds(n, fam)
		out = append(out, netElem{key: first})
	}
	return out
}

// pairStarts are the (src . dst) ranges of a concatenated interval set.
func pairStarts(srcs, dsts []*net.IPNet, fam int) []netElem {
	var out []netElem
	for _, s := range srcs {
		for _, d := range dsts {
			sf, sl := bounds(s, fam)
			df, dl := bounds(d, fam)
			out = append(out, netElem{key: append(sf, df...), keyEnd: append(sl, dl...)})
		}
	}
	return out
}

// bounds are the first and last address of a prefix, 4 or 16 bytes.
func bounds(n *net.IPNet, fam int) (first, last []byte) {
	ip := n.IP.To16()
	if fam == 4 {
		ip = n.IP.To4()
	}
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
