package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// state is what exists in the kernel for one attachment, found by targeted
// lookups from its identity alone.
type state struct {
	nm         names
	attExists  bool
	ports      []portKey                    // recorded in the DNAT chain and present in their map, pointing at us
	records    []string                     // all DNAT rule comments
	guardIn    map[*nftables.Table][]string // tables holding the guard chain -> its rule comments
	guardElems map[*nftables.Table]string   // table -> host interface whose guard element points at us
	noICCPort  string                       // host interface in the bridge noicc set, owned by us
}

// readState reads an attachment's objects: the DNAT chain and the guard
// chain(s) exist or not (one GET each); their rule comments are the record
// of the map elements pointing at them (one dump of one chain each); each
// recorded element is verified with one GET. hostIf is a fallback for a
// guard chain whose record rule is gone.
func (f *Firewall) readState(nm names, hostIf string) (*state, error) {
	st := &state{nm: nm, guardIn: map[*nftables.Table][]string{}, guardElems: map[*nftables.Table]string{}}
	if err := f.readDNAT(st); err != nil {
		return nil, err
	}
	for _, t := range []*nftables.Table{brTable, inetTable} {
		if err := f.readGuard(st, t, hostIf); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// readDNAT reads the DNAT chain's records and keeps the port elements that
// still lead to it.
func (f *Firewall) readDNAT(st *state) error {
	var err error
	if st.attExists, err = f.q.chainExists(inetTable, st.nm.att); err != nil || !st.attExists {
		return err
	}
	rules, err := f.nft.GetRules(inetTable, &nftables.Chain{Name: st.nm.att, Table: inetTable})
	if err != nil {
		return fmt.Errorf("read chain %s: %w", st.nm.att, err)
	}
	for _, r := range rules {
		c := ruleComment(r)
		st.records = append(st.records, c)
		k, ok := parseRecord(c)
		if !ok {
			continue
		}
		e, err := f.q.getElem(inetTable, k.set(), k.key())
		if err != nil {
			return err
		}
		if e.found && e.chain == st.nm.att {
			st.ports = append(st.ports, k)
		}
	}
	return nil
}

// readGuard reads the anti-spoofing chain of table t, the guard element
// leading to it (the chain's first rule names the host interface; hostIf
// is the fallback) and, in the bridge table, the icc=false element.
func (f *Firewall) readGuard(st *state, t *nftables.Table, hostIf string) error {
	ok, err := f.q.chainExists(t, st.nm.guard)
	if err != nil || !ok {
		return err
	}
	rules, err := f.nft.GetRules(t, &nftables.Chain{Name: st.nm.guard, Table: t})
	if err != nil {
		return fmt.Errorf("read chain %s: %w", st.nm.guard, err)
	}
	var comments []string
	for _, r := range rules {
		comments = append(comments, ruleComment(r))
	}
	st.guardIn[t] = comments
	cands := []string{hostIf}
	if len(comments) > 0 {
		if fl := strings.Fields(comments[0]); len(fl) >= 3 && fl[0] == "nswire" && fl[1] == "guard" {
			cands = []string{fl[2], hostIf}
		}
	}
	for _, h := range cands {
		if h == "" {
			continue
		}
		e, err := f.q.getElem(t, setGuard, ifname(h))
		if err != nil {
			return err
		}
		if e.found && e.chain == st.nm.guard {
			st.guardElems[t] = h
			break
		}
	}
	h := st.guardElems[t]
	if t != brTable || h == "" {
		return nil
	}
	e, err := f.q.getElem(t, setNoICCBr, ifname(h))
	if err != nil {
		return err
	}
	if e.found && e.comment == st.nm.owner {
		st.noICCPort = h
	}
	return nil
}

// queueDelete removes what readState found. With dropChains false the
// chains stay (they are about to be flushed and refilled by Add).
func (f *Firewall) queueDelete(st *state, dropChains bool) error {
	c := f.nft
	for _, k := range st.ports {
		if err := c.SetDeleteElements(setDef(inetTable, k.set()), []nftables.SetElement{{Key: k.key()}}); err != nil {
			return err
		}
	}
	for t, h := range st.guardElems {
		if err := c.SetDeleteElements(setDef(t, setGuard), []nftables.SetElement{{Key: ifname(h)}}); err != nil {
			return err
		}
	}
	if st.noICCPort != "" {
		if err := c.SetDeleteElements(setDef(brTable, setNoICCBr), []nftables.SetElement{{Key: ifname(st.noICCPort)}}); err != nil {
			return err
		}
	}
	if !dropChains {
		return nil
	}
	if st.attExists {
		ch := &nftables.Chain{Table: inetTable, Name: st.nm.att}
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	for t := range st.guardIn {
		ch := &nftables.Chain{Table: t, Name: st.nm.guard}
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	return nil
}

func (st *state) empty() bool {
	return !st.attExists && len(st.guardIn) == 0 && len(st.ports) == 0 && len(st.guardElems) == 0
}

// Del removes everything of one attachment. Only Net.Name, ContainerID and
// IfName are needed (HostIf is a fallback): the objects are found from
// names derived from the identity, and the elements pointing at them from
// the rule comments of those objects. Missing objects are success.
func (f *Firewall) Del(a *Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	return f.delByNames(nm, a.HostIf)
}

func (f *Firewall) delByNames(nm names, hostIf string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var st *state
		st, err = f.readState(nm, hostIf)
		if err != nil {
			return fmt.Errorf("firewall: del %s: %w", nm.owner, err)
		}
		if st.empty() {
			return nil
		}
		if err = f.flush(f.queueDelete(st, true)); err == nil {
			f.flushUDP(st.ports)
			return nil
		}
		if errors.Is(err, unix.EBUSY) {
			// A chain is still referenced by elements its rules no longer
			// record (someone flushed our chains): find them by owner.
			err = f.delOrphanedRefs(st)
			if err == nil {
				continue
			}
		}
		if !isNotFound(err) {
			break // ENOENT: something vanished between read and write; read again
		}
	}
	return fmt.Errorf("firewall: del %s: %w", nm.owner, err)
}

// ownedMaps are the maps and sets whose elements carry their owner as
// comment and may jump to an attachment's chains.
var ownedMaps = []struct {
	t   *nftables.Table
	set string
}{
	{inetTable, "ports4"}, {inetTable, "ports4any"}, {inetTable, "ports6"}, {inetTable, "ports6any"},
	{inetTable, setGuard}, {brTable, setGuard}, {brTable, setNoICCBr},
}

// delOrphanedRefs deletes every element owned by st's attachment, found by
// listing the maps: the slow path, taken only when the per-attachment
// records were destroyed by someone else.
func (f *Firewall) delOrphanedRefs(st *state) error {
	found := false
	for _, m := range ownedMaps {
		set := setDef(m.t, m.set)
		els, err := f.nft.GetSetElements(set)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", m.set, err)
		}
		var mine []nftables.SetElement
		for _, e := range els {
			if e.Comment == st.nm.owner || (e.VerdictData != nil && (e.VerdictData.Chain == st.nm.att || e.VerdictData.Chain == st.nm.guard)) {
				mine = append(mine, nftables.SetElement{Key: e.Key})
			}
		}
		if len(mine) > 0 {
			found = true
			if err := f.nft.SetDeleteElements(set, mine); err != nil {
				return err
			}
		}
	}
	if !found {
		return fmt.Errorf("chains of %s are busy and no element names it: %w", st.nm.owner, unix.EBUSY)
	}
	return f.flush(nil)
}
