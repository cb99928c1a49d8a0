package firewall

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
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
	var base []*request
	for _, t := range []*nftables.Table{inetTable, brTable} {
		for _, ch := range baseChainNames[t] {
			base = append(base, getChainReq(t, ch))
		}
	}
	keys := portKeys(a)
	var elems []*request
	for _, k := range keys {
		elems = append(elems, getElemReq(inetTable, k.set(), k.key()))
	}
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	st, err := f.readState(nm, a.HostIf, readOpts{extra: append(slices.Clone(base), elems...), speculate: true, records: true})
	if err != nil {
		return err
	}
	for _, r := range base {
		ok, err := r.exists()
		if err != nil {
			return err
		}
		if !ok {
			t, ch := inetTable, ""
			for _, a := range r.attrs {
				if a.Type == unix.NFTA_CHAIN_NAME {
					ch = string(a.Data[:len(a.Data)-1])
				}
			}
			if r.fam == nftables.TableFamilyBridge {
				t = brTable
			}
			return fmt.Errorf("firewall: nftables chain %s of table %s %s is missing", ch, familyName(t), TableName)
		}
	}
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
