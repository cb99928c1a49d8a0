package firewall

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
)

// netAssert is one network-level set and the elements a network wants in
// it (want) or out of it.
type netAssert struct {
	set  string
	els  []setElem
	want bool
	// When asked (probe): the start of each interval of els, its index
	// in els and its GET.
	starts []setElem
	at     []int
	probes []*request
}

// networkAsserts lists the network-level elements of n; remove wants them
// all gone (GC of a network with no attachments).
func networkAsserts(n Network, remove bool) []*netAssert {
	var out []*netAssert
	for _, fam := range families {
		var subs []*net.IPNet
		for _, s := range n.Subnets {
			if s != nil && famOf(s.IP) == fam {
				subs = append(subs, s)
			}
		}
		if len(subs) == 0 {
			continue
		}
		var single []setElem
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
		for _, x := range []netAssert{
			{set: sN(nsNets, fam), els: single, want: true},
			{set: sN(nsIntra, fam), els: pairs, want: true},
			{set: sN(nsIso, fam), els: single, want: n.Isolation},
			{set: sN(nsMasq, fam), els: single, want: n.IPMasq && !n.Internal},
			{set: sN(nsInternal, fam), els: single, want: n.Internal},
			{set: sN(nsNoICC, fam), els: pairs, want: !n.ICC},
			{set: sN(nsNoMasq, fam), els: pairElems(subs, noMasq, fam), want: true},
		} {
			if len(x.els) > 0 {
				x.want = x.want && !remove
				out = append(out, &x)
			}
		}
	}
	return out
}

// probe asks, for each interval of a, whether the set holds exactly it:
// requests for the first round of an ADD.
func (a *netAssert) probe() []*request {
	for i, e := range a.els {
		if !e.intervalEnd {
			a.starts = append(a.starts, e)
			a.at = append(a.at, i)
			a.probes = append(a.probes, getRangeReq(inetTable, a.set, e.key, e.keyEnd))
		}
	}
	return a.probes
}

// match reads probe i: whether the set holds exactly the i-th interval of
// a (exact), or another interval that holds its start (foreign). An
// interval set answers a GET with the interval holding the key: it is
// ours only if it starts (and for a range, ends) where ours does.
func (a *netAssert) match(i int) (exact, foreign bool, err error) {
	got, err := a.probes[i].elem()
	if err != nil {
		return false, false, err
	}
	start := a.starts[i]
	exact = got.found && bytes.Equal(got.key, start.key) &&
		(start.keyEnd == nil || bytes.Equal(got.keyEnd, start.keyEnd))
	return exact, got.found && !exact, nil
}

// settled reports whether the probes found the set as a wants it: every
// interval present, or (not wanted) none. Without probes, or when one
// failed, it is false and the elements are asserted blindly.
func (a *netAssert) settled() bool {
	if len(a.probes) == 0 {
		return false
	}
	for i := range a.probes {
		exact, foreign, err := a.match(i)
		if err != nil || exact != a.want {
			return false
		}
		if foreign {
			return false // overlapping foreign interval: let the kernel judge
		}
	}
	return true
}

// CheckNetwork verifies that the network-level elements of n are as an
// Add of an attachment of n leaves them (the same elements, asserted by
// networkAsserts), and names the first that is not, with its set (a
// *Mismatch). Any other error means the sets could not be read. It reads
// them in one round of GETs, the probes of Add's first round, so its cost
// is that of n's own subnets whatever the size of the sets.
func (f *Firewall) CheckNetwork(n Network) error {
	asserts := networkAsserts(n, false)
	var reqs []*request
	for _, a := range asserts {
		reqs = append(reqs, a.probe()...)
	}
	if len(reqs) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.q.exchange(reqs...); err != nil {
		return fmt.Errorf("firewall: check network %s: %w", n.Name, err)
	}
	for _, a := range asserts {
		for i := range a.probes {
			exact, foreign, err := a.match(i)
			what := ""
			switch {
			case err != nil:
				return fmt.Errorf("firewall: network %s: get element of set inet %s %s: %w", n.Name, TableName, a.set, err)
			case a.want && foreign:
				what = "missing (another interval holds its start)"
			case a.want && !exact:
				what = "missing"
			case !a.want && exact:
				what = "unexpected"
			default:
				// A foreign interval where n wants none of its own is
				// another network's: not n's to report.
				continue
			}
			return mismatch("network %s: element %s of set inet %s %s is %s",
				n.Name, a.interval(i), TableName, a.set, what)
		}
	}
	return nil
}

// interval shows the i-th probed interval of a as first-last address,
// per field for a range of concatenations.
func (a *netAssert) interval(i int) string {
	e, last := a.starts[i], a.starts[i].keyEnd
	h := len(e.key)
	if last != nil {
		h /= 2 // address . address
	} else {
		// The interval-end element that follows holds last+1; there is
		// none when the interval reaches the top of the address space.
		last = bytes.Repeat([]byte{0xff}, len(e.key))
		if j := a.at[i] + 1; j < len(a.els) && a.els[j].intervalEnd {
			last = slices.Clone(a.els[j].key)
			for k := len(last) - 1; k >= 0; k-- {
				last[k]--
				if last[k] != 0xff {
					break
				}
			}
		}
	}
	var parts []string
	for o := 0; h > 0 && o+h <= len(e.key) && o+h <= len(last); o += h {
		parts = append(parts, net.IP(e.key[o:o+h]).String()+"-"+net.IP(last[o:o+h]).String())
	}
	return strings.Join(parts, " . ")
}

// queueNetwork asserts the network-level elements that are not already as
// wanted. An asserted element is added (adding an existing element
// without NLM_F_EXCL is a no-op), and removed again when the network does
// not want it (add then delete: absent afterwards either way).
func queueNetwork(tx *txn, asserts []*netAssert) {
	for _, a := range asserts {
		if a.settled() {
			continue
		}
		tx.addElems(inetTable, a.set, a.els...)
		if !a.want {
			tx.delElems(inetTable, a.set, a.els...)
		}
	}
}

// pairElems encodes every (source prefix . destination prefix) pair for a
// concatenated interval set.
func pairElems(srcs, dsts []*net.IPNet, fam family) []setElem {
	var els []setElem
	for _, s := range srcs {
		for _, d := range dsts {
			sf, sl := bounds(s, fam)
			df, dl := bounds(d, fam)
			els = append(els, setElem{key: concat(sf, df), keyEnd: concat(sl, dl)})
		}
	}
	return els
}

// bounds returns the first and last address of a prefix.
func bounds(n *net.IPNet, fam family) (first, last []byte) {
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
func intervalElems(n *net.IPNet, fam family) []setElem {
	first, last := bounds(n, fam)
	els := []setElem{{key: first}}
	end := slices.Clone(last)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return append(els, setElem{key: end, intervalEnd: true})
		}
	}
	return els
}
