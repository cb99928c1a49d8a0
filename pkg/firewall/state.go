package firewall

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// state is what exists in the kernel for one attachment, found by targeted
// lookups from its identity alone.
type state struct {
	nm          names
	attExists   bool
	ports       []portKey                    // recorded in the DNAT chain and present in their map, pointing at us
	records     []string                     // all DNAT rule comments
	guardChains []*nftables.Table            // tables holding the guard chain
	guardIn     map[*nftables.Table][]string // guard chain -> its rule comments, when read
	guardElems  map[*nftables.Table]string   // table -> host interface whose guard element points at us
	noICCPort   string                       // host interface in the bridge noicc set, owned by us
}

// readOpts tunes readState to its caller.
type readOpts struct {
	// extra requests ride along with the first round (at most one dump,
	// and then the DNAT chain is not dumped speculatively).
	extra []*request
	// speculate asks in the first round for what exists when the
	// attachment does (its DNAT rules, its guard elements by hostIf): DEL
	// and CHECK expect it, a fresh ADD does not.
	speculate bool
	// records: read the guard chains' rule comments even when the guard
	// element was found by hostIf (CHECK compares them).
	records bool
}

// readState reads an attachment's objects: whether the DNAT chain and the
// guard chain(s) exist (one GET each); their rule comments, the record of
// the map elements pointing at them (one dump of one chain each); each
// recorded element (one GET each). hostIf is a fallback for a guard chain
// whose record rule is gone. The requests are pipelined: each round is one
// sendmsg, with at most one dump.
func (f *Firewall) readState(nm names, hostIf string, o readOpts) (*state, error) {
	st := &state{nm: nm, guardIn: map[*nftables.Table][]string{}, guardElems: map[*nftables.Table]string{}}
	tables := []*nftables.Table{brTable, inetTable}
	att := getChainReq(inetTable, nm.att)
	guard := map[*nftables.Table]*request{brTable: getChainReq(brTable, nm.guard), inetTable: getChainReq(inetTable, nm.guard)}
	round := append([]*request{att, guard[brTable], guard[inetTable]}, o.extra...)
	var attRules *request
	hasDump := slices.ContainsFunc(o.extra, func(r *request) bool { return r.dump })
	if o.speculate && !hasDump {
		attRules = dumpRulesReq(inetTable, nm.att)
		round = append(round, attRules)
	}
	// Guard elements (and the bridge icc=false element) of candidate host
	// interfaces, asked for in some round and checked once they answer.
	type cand struct {
		t            *nftables.Table
		h            string
		guard, noicc *request
	}
	var cands []*cand
	askCand := func(t *nftables.Table, h string) *cand {
		c := &cand{t: t, h: h, guard: getElemReq(t, setGuard, ifname(h))}
		round = append(round, c.guard)
		if t == brTable {
			c.noicc = getElemReq(t, setNoICCBr, ifname(h))
			round = append(round, c.noicc)
		}
		cands = append(cands, c)
		return c
	}
	if o.speculate && hostIf != "" {
		for _, t := range tables {
			askCand(t, hostIf)
		}
	}
	if err := f.q.exchange(round...); err != nil {
		return nil, err
	}
	var err error
	if st.attExists, err = att.exists(); err != nil {
		return nil, fmt.Errorf("get chain %s: %w", nm.att, err)
	}
	var guardTables []*nftables.Table
	for _, t := range tables {
		ok, err := guard[t].exists()
		if err != nil {
			return nil, fmt.Errorf("get chain %s: %w", nm.guard, err)
		}
		if ok {
			guardTables = append(guardTables, t)
		}
	}
	st.guardChains = guardTables

	// Later rounds: one dump each (DNAT rules first, then guard rules) with
	// the GETs that the previous round made possible.
	var ports []*request
	var portKeys []portKey
	dumpedGuard := map[*nftables.Table]*request{}
	checked := map[*cand]bool{}
	for {
		round = round[:0]
		// Results of the previous round.
		if attRules != nil && st.attExists && st.records == nil && ports == nil {
			if attRules.err != nil {
				return nil, fmt.Errorf("read chain %s: %w", nm.att, attRules.err)
			}
			for _, c := range attRules.ruleComments() {
				st.records = append(st.records, c)
				if k, ok := parseRecord(c); ok {
					portKeys = append(portKeys, k)
					r := getElemReq(inetTable, k.set(), k.key())
					ports = append(ports, r)
					round = append(round, r)
				}
			}
			if st.records == nil {
				st.records = []string{}
			}
		}
		for t, r := range dumpedGuard {
			if _, done := st.guardIn[t]; done || !r.done {
				continue
			}
			if r.err != nil {
				return nil, fmt.Errorf("read chain %s: %w", nm.guard, r.err)
			}
			comments := r.ruleComments()
			st.guardIn[t] = comments
			if st.guardElems[t] == "" && len(comments) > 0 {
				if fl := strings.Fields(comments[0]); len(fl) >= 3 && fl[0] == "nswire" && fl[1] == "guard" && fl[2] != hostIf {
					askCand(t, fl[2])
				}
			}
		}
		for _, c := range cands {
			if checked[c] || !c.guard.done {
				continue
			}
			checked[c] = true
			if !slices.Contains(guardTables, c.t) || st.guardElems[c.t] != "" {
				continue
			}
			e, err := c.guard.elem()
			if err != nil {
				return nil, err
			}
			if !e.found || e.chain != nm.guard {
				continue
			}
			st.guardElems[c.t] = c.h
			if c.noicc != nil {
				e, err := c.noicc.elem()
				if err != nil {
					return nil, err
				}
				if e.found && e.comment == nm.owner {
					st.noICCPort = c.h
				}
			}
		}
		// Next dump, if any.
		switch {
		case st.attExists && attRules == nil:
			attRules = dumpRulesReq(inetTable, nm.att)
			round = append(round, attRules)
		default:
			for _, t := range guardTables {
				if dumpedGuard[t] != nil {
					continue
				}
				if st.guardElems[t] != "" && !o.records {
					continue
				}
				if st.guardElems[t] == "" && hostIf != "" && !slices.ContainsFunc(cands, func(c *cand) bool { return c.t == t }) {
					askCand(t, hostIf) // not asked speculatively
				}
				dumpedGuard[t] = dumpRulesReq(t, nm.guard)
				round = append(round, dumpedGuard[t])
				break
			}
		}
		if len(round) == 0 {
			break
		}
		if err := f.q.exchange(round...); err != nil {
			return nil, err
		}
	}
	for i, r := range ports {
		e, err := r.elem()
		if err != nil {
			return nil, err
		}
		if e.found && e.chain == nm.att {
			st.ports = append(st.ports, portKeys[i])
		}
	}
	return st, nil
}

// queueDelete removes what readState found. With dropChains false the
// chains stay (they are about to be flushed and refilled by Add).
func (f *Firewall) queueDelete(st *state, dropChains bool) error {
	c := f.enc.c
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
	for _, t := range st.guardChains {
		ch := &nftables.Chain{Table: t, Name: st.nm.guard}
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	return nil
}

func (st *state) empty() bool {
	return !st.attExists && len(st.guardChains) == 0 && len(st.ports) == 0 && len(st.guardElems) == 0
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
		st, err = f.readState(nm, hostIf, readOpts{speculate: true})
		if err != nil {
			return fmt.Errorf("firewall: del %s: %w", nm.owner, err)
		}
		if st.empty() {
			return nil
		}
		if err = f.commit(f.queueDelete(st, true)); err == nil {
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
	nft, err := f.conn()
	if err != nil {
		return err
	}
	for _, m := range ownedMaps {
		set := setDef(m.t, m.set)
		els, err := nft.GetSetElements(set)
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
			if err := f.enc.c.SetDeleteElements(set, mine); err != nil {
				return f.commit(err)
			}
		}
	}
	if !found {
		return fmt.Errorf("chains of %s are busy and no element names it: %w", st.nm.owner, unix.EBUSY)
	}
	return f.commit(nil)
}
