package firewall

import (
	"fmt"
	"net"
	"slices"
)

// queuePorts adds the attachment's record chain and its DNAT map
// elements, plus the overlap assertions: adding an element with our datum
// and deleting it in the same transaction fails with EEXIST exactly when
// someone else holds that key (each datum ends with the attachment's tag),
// and leaves nothing behind otherwise.
//
// The a- chain only records the keys: its rules have no expressions, so
// nothing in a commit validates it (a verdict map element going to a
// chain per attachment made every commit walk all of them).
func queuePorts(tx *txn, nm names, keys []portKey, local map[family][]net.IP) {
	if len(keys) == 0 {
		return
	}
	tx.addChain(inetTable, nm.att)
	tx.flushChain(inetTable, nm.att)
	for _, k := range keys {
		tx.addRecord(inetTable, nm.att, k.record())
	}
	for _, k := range keys {
		tx.addExclusive(inetTable, k.set(), setElem{key: k.key(), val: k.data(), comment: nm.owner})
	}
	for _, k := range keys {
		for _, o := range overlapping(k, local) {
			el := setElem{key: o.key(), val: k.data()}
			tx.addExclusive(inetTable, o.set(), el)
			tx.delElems(inetTable, o.set(), el)
		}
	}
}

// overlapping lists the keys of other maps that would capture the same
// packets as k: the wildcard for a specific address, and the host's own
// addresses for a wildcard.
func overlapping(k portKey, local map[family][]net.IP) []portKey {
	if !k.wildcard {
		o := k
		o.wildcard, o.hostIP = true, nil
		return []portKey{o}
	}
	var out []portKey
	for _, ip := range local[k.fam] {
		o := k
		o.wildcard, o.hostIP = false, ip
		out = append(out, o)
	}
	return out
}

// localAddrs lists the addresses that address-specific mappings use: the
// only ones a wildcard mapping can clash with. It reads the two
// address-specific maps (one element per such mapping, usually none), not
// the host's addresses, which grow with every container.
func (f *Firewall) localAddrs(keys []portKey) (map[family][]net.IP, error) {
	if !slices.ContainsFunc(keys, func(k portKey) bool { return k.wildcard }) {
		return nil, nil
	}
	out := map[family][]net.IP{}
	for _, fam := range families {
		r := dumpElemsReq(inetTable, dnatSet(fam, false))
		if err := f.q.exchange(r); err != nil {
			return nil, err
		}
		if isNotFound(r.err) {
			continue
		}
		if r.err != nil {
			return nil, fmt.Errorf("list address-specific ports: %w", r.err)
		}
		size := net.IPv4len
		if fam == ipv6 {
			size = net.IPv6len
		}
		seen := map[string]bool{}
		for _, k := range r.elemKeys() {
			if len(k) < size || seen[string(k[:size])] {
				continue
			}
			seen[string(k[:size])] = true
			out[fam] = append(out[fam], net.IP(slices.Clone(k[:size])))
		}
	}
	return out, nil
}
