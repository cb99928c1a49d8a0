package firewall

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
)

// Check verifies that every object of the attachment is present and as Add
// made it, and names the first one that is not.
func (f *Firewall) Check(a *Attachment) error {
	if err := validateAttachment(a); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// One round: the base chains, the attachment's chains, its elements.
	base := baseChainProbes()
	keys := portKeys(a)
	elems := make([]*request, len(keys))
	extra := make([]*request, 0, len(base)+len(keys))
	for _, b := range base {
		extra = append(extra, b.r)
	}
	for i, k := range keys {
		elems[i] = getElemReq(inetTable, k.set(), k.key())
		extra = append(extra, elems[i])
	}
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	st, err := f.readState(nm, a.HostIf, readOpts{extra: extra, speculate: true, records: true})
	if err != nil {
		return err
	}
	if err := checkBaseChains(base); err != nil {
		return err
	}
	if err := checkPorts(nm, st, keys, elems); err != nil {
		return err
	}
	return checkGuard(a, nm, st)
}

// baseChainProbe is the GET of one base chain, with what it asks for.
type baseChainProbe struct {
	t  *nftables.Table
	ch string
	r  *request
}

func baseChainProbes() []baseChainProbe {
	var out []baseChainProbe
	for _, t := range []*nftables.Table{inetTable, brTable} {
		for _, ch := range baseChainNames[t] {
			out = append(out, baseChainProbe{t: t, ch: ch, r: getChainReq(t, ch)})
		}
	}
	return out
}

func checkBaseChains(base []baseChainProbe) error {
	for _, b := range base {
		ok, err := b.r.exists()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("firewall: nftables chain %s of table %s %s is missing", b.ch, familyName(b.t), TableName)
		}
	}
	return nil
}

// checkPorts compares the published keys with their map elements (elems,
// in the order of keys) and the DNAT chain's records.
func checkPorts(nm names, st *state, keys []portKey, elems []*request) error {
	for i, k := range keys {
		e, err := elems[i].elem()
		if err != nil {
			return err
		}
		switch {
		case !e.found:
			return fmt.Errorf("firewall: published %s of %s: element missing from map %s", k, nm.owner, k.set())
		case e.chain != nm.att:
			return fmt.Errorf("firewall: published %s of %s: map %s points to %s (owner %q)", k, nm.owner, k.set(), e.chain, e.comment)
		}
		if !slices.Contains(st.records, k.record()) {
			return fmt.Errorf("firewall: published %s of %s: DNAT rule %q missing from chain %s", k, nm.owner, k.record(), nm.att)
		}
	}
	for _, r := range st.records {
		if !slices.ContainsFunc(keys, func(k portKey) bool { return k.record() == r }) {
			return fmt.Errorf("firewall: chain %s of %s has unexpected rule %q", nm.att, nm.owner, r)
		}
	}
	return nil
}

// checkGuard compares the anti-spoofing element, chain and icc=false
// element with what Add makes for a.
func checkGuard(a *Attachment, nm names, st *state) error {
	t := guardTable(a.Net)
	if st.guardElems[t] != a.HostIf {
		return fmt.Errorf("firewall: anti-spoofing for %s: element %s missing from map %s %s guard", nm.owner, a.HostIf, familyName(t), TableName)
	}
	if wantNoICC := a.Net.Bridge != "" && !a.Net.ICC; wantNoICC != (st.noICCPort == a.HostIf) {
		return fmt.Errorf("firewall: icc=%v for %s: element %s of set bridge %s noicc is %s", a.Net.ICC, nm.owner,
			a.HostIf, TableName, map[bool]string{true: "missing", false: "unexpected"}[wantNoICC])
	}
	got := st.guardIn[t]
	for i, r := range guardRules(a) {
		if i >= len(got) || got[i] != r.comment {
			return fmt.Errorf("firewall: anti-spoofing chain %s of %s: rule %q missing or different", nm.guard, nm.owner, r.comment)
		}
	}
	if want := len(guardRules(a)); len(got) != want {
		return fmt.Errorf("firewall: anti-spoofing chain %s of %s has %d rules, want %d", nm.guard, nm.owner, len(got), want)
	}
	return nil
}

func familyName(t *nftables.Table) string {
	if t.Family == nftables.TableFamilyBridge {
		return "bridge"
	}
	return "inet"
}
