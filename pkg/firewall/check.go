package firewall

import (
	"bytes"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
)

// Mismatch is what Check found different from what Add made. Any other
// error of Check means the tables could not be read, which says nothing
// about the attachment.
type Mismatch struct{ Msg string }

func (m *Mismatch) Error() string { return m.Msg }

func mismatch(format string, args ...any) error {
	return &Mismatch{Msg: "firewall: " + fmt.Sprintf(format, args...)}
}

// Check verifies that nswire's tables are current (layout.go: stamps and
// skeleton chains with their rules) and that every object of the
// attachment is present and as Add made it, and names the first one that
// is not (a *Mismatch). The network-level elements are CheckNetwork's.
func (f *Firewall) Check(a *Attachment) error {
	if err := validateAttachment(a); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// One round: the tables (stamps and skeleton chains), the
	// attachment's chains, its elements.
	stamps := stampProbes()
	extra := stampRequests(stamps)
	keys := portKeys(a)
	elems := make([]*request, len(keys))
	for i, k := range keys {
		elems[i] = getElemReq(inetTable, k.set(), k.key())
		extra = append(extra, elems[i])
	}
	nm := namesOf(a.ID())
	guard := guardProbes(a, nm)
	for _, g := range guard {
		extra = append(extra, g.r)
	}
	st, err := f.readState(nm, readOpts{extra: extra, speculate: true})
	if err != nil {
		return fmt.Errorf("firewall: check %s: %w", nm.owner, err)
	}
	if err := checkStamps(stamps); err != nil {
		return err
	}
	if err := checkPorts(nm, st, keys, elems); err != nil {
		return err
	}
	return checkGuard(a, nm, st, guard)
}

// guardProbe is the GET of one anti-spoofing element Add makes (or, for
// the icc=false element, may make).
type guardProbe struct {
	element
	want bool // expected present
	r    *request
}

func guardProbes(a *Attachment, nm names) []guardProbe {
	t := guardTable(a.Net)
	var out []guardProbe
	for _, e := range specOf(a, nm.owner).elems() {
		out = append(out, guardProbe{e, true, getElemReq(t, e.set, e.key)})
	}
	if t == brTable {
		e := element{set: setNoICCBr, key: ifname(a.HostIf), comment: nm.owner}
		out = append(out, guardProbe{e, !a.Net.ICC, getElemReq(t, e.set, e.key)})
	}
	return out
}

// checkPorts compares the published keys with their map elements (elems,
// in the order of keys) and the a- chain's records.
func checkPorts(nm names, st *state, keys []portKey, elems []*request) error {
	for i, k := range keys {
		e, err := elems[i].elem()
		if err != nil {
			return fmt.Errorf("firewall: published %s of %s: get element of map %s: %w", k, nm.owner, k.set(), err)
		}
		switch {
		case !e.found:
			return mismatch("published %s of %s: element missing from map %s", k, nm.owner, k.set())
		case !bytes.Equal(e.data, k.data()) || e.comment != nm.owner:
			return mismatch("published %s of %s: map %s holds another translation (owner %q)", k, nm.owner, k.set(), e.comment)
		}
		if !slices.Contains(st.records, k.record()) {
			return mismatch("published %s of %s: record %q missing from chain %s", k, nm.owner, k.record(), nm.att)
		}
	}
	for _, r := range st.records {
		if !slices.ContainsFunc(keys, func(k portKey) bool { return k.record() == r }) {
			return mismatch("chain %s of %s has unexpected rule %q", nm.att, nm.owner, r)
		}
	}
	return nil
}

// checkGuard compares the anti-spoofing record chain and elements, and the
// icc=false element, with what Add makes for a.
func checkGuard(a *Attachment, nm names, st *state, probes []guardProbe) error {
	t := guardTable(a.Net)
	for _, p := range probes {
		e, err := p.r.elem()
		if err != nil {
			return fmt.Errorf("firewall: anti-spoofing for %s: get element of set %s %s %s: %w", nm.owner, familyName(t), TableName, p.set, err)
		}
		what := map[bool]string{true: "missing", false: "unexpected"}[p.want]
		if e.found && p.comment != "" && e.comment != p.comment {
			what = fmt.Sprintf("owned by %q", e.comment)
		} else if e.found == p.want {
			continue
		}
		return mismatch("anti-spoofing for %s: element %s of set %s %s %s is %s",
			nm.owner, keyString(p.element), familyName(t), TableName, p.set, what)
	}
	got, want := st.guardIn[t], specOf(a, nm.owner).record()
	if !slices.Equal(got, want) {
		return mismatch("anti-spoofing record chain %s of %s holds %q, want %q", nm.guard, nm.owner, got, want)
	}
	return nil
}

// keyString shows a guard set key: the port name, then the MAC or address.
func keyString(e element) string {
	h := string(bytes.TrimRight(e.key[:16], "\x00"))
	switch v := e.key[16:]; e.set {
	case setGMAC:
		return h + " . " + net.HardwareAddr(v[:6]).String()
	case setGIP4, setGIP6:
		return h + " . " + net.IP(v).String()
	}
	return h
}

func familyName(t *nftables.Table) string { return famName(t.Family) }
