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
	r := newStateReader(nm, hostIf, o)
	r.askFirst()
	if err := f.q.exchange(r.round...); err != nil {
		return nil, err
	}
	if err := r.takeChains(); err != nil {
		return nil, err
	}
	// Later rounds: one dump each (DNAT rules first, then guard rules) with
	// the GETs that the previous round made possible.
	for {
		r.round = r.round[:0]
		if err := r.takeAnswers(); err != nil {
			return nil, err
		}
		r.askNextDump()
		if len(r.round) == 0 {
			break
		}
		if err := f.q.exchange(r.round...); err != nil {
			return nil, err
		}
	}
	if err := r.takePorts(); err != nil {
		return nil, err
	}
	return r.st, nil
}

// stateReader is one readState in progress: the requests of each kind and
// the round being filled.
type stateReader struct {
	st       *state
	hostIf   string
	o        readOpts
	round    []*request
	att      *request                     // GET of the DNAT chain
	guard    map[*nftables.Table]*request // GET of the guard chain, per table
	attRules *request                     // dump of the DNAT chain's rules
	// Guard elements (and the bridge icc=false element) of candidate host
	// interfaces, asked for in some round and checked once they answer.
	cands      []*cand
	guardRules map[*nftables.Table]*request // dump of the guard chain's rules
	ports      []*request                   // GET of each recorded port element
	portKeys   []portKey
}

// guardTables are the tables an attachment's guard chain may live in.
var guardTables = []*nftables.Table{brTable, inetTable}

type cand struct {
	t            *nftables.Table
	h            string
	guard, noicc *request
	checked      bool // its answers were taken
}

func newStateReader(nm names, hostIf string, o readOpts) *stateReader {
	return &stateReader{
		st:         &state{nm: nm, guardIn: map[*nftables.Table][]string{}, guardElems: map[*nftables.Table]string{}},
		hostIf:     hostIf,
		o:          o,
		guardRules: map[*nftables.Table]*request{},
	}
}

// askFirst fills the first round: the chains by name, the caller's extra
// requests and, when speculating, what exists if the attachment does.
func (r *stateReader) askFirst() {
	nm := r.st.nm
	r.att = getChainReq(inetTable, nm.att)
	r.guard = map[*nftables.Table]*request{brTable: getChainReq(brTable, nm.guard), inetTable: getChainReq(inetTable, nm.guard)}
	r.round = append([]*request{r.att, r.guard[brTable], r.guard[inetTable]}, r.o.extra...)
	if !r.o.speculate {
		return
	}
	if !slices.ContainsFunc(r.o.extra, func(q *request) bool { return q.dump }) {
		r.attRules = dumpRulesReq(inetTable, nm.att)
		r.round = append(r.round, r.attRules)
	}
	if r.hostIf != "" {
		for _, t := range guardTables {
			r.askCand(t, r.hostIf)
		}
	}
}

func (r *stateReader) askCand(t *nftables.Table, h string) {
	c := &cand{t: t, h: h, guard: getElemReq(t, setGuard, ifname(h))}
	r.round = append(r.round, c.guard)
	if t == brTable {
		c.noicc = getElemReq(t, setNoICCBr, ifname(h))
		r.round = append(r.round, c.noicc)
	}
	r.cands = append(r.cands, c)
}

// takeChains reads which of the chains exist.
func (r *stateReader) takeChains() error {
	nm := r.st.nm
	var err error
	if r.st.attExists, err = r.att.exists(); err != nil {
		return fmt.Errorf("get chain %s: %w", nm.att, err)
	}
	for _, t := range guardTables {
		ok, err := r.guard[t].exists()
		if err != nil {
			return fmt.Errorf("get chain %s: %w", nm.guard, err)
		}
		if ok {
			r.st.guardChains = append(r.st.guardChains, t)
		}
	}
	return nil
}

// takeAnswers reads what the previous round answered, asking in the new
// round for the elements those answers name.
func (r *stateReader) takeAnswers() error {
	if err := r.takeAttRules(); err != nil {
		return err
	}
	if err := r.takeGuardRules(); err != nil {
		return err
	}
	return r.takeCands()
}

// takeAttRules keeps the DNAT chain's rule comments and asks for the
// element each port record names.
func (r *stateReader) takeAttRules() error {
	st := r.st
	if r.attRules == nil || !st.attExists || st.records != nil || r.ports != nil {
		return nil
	}
	if r.attRules.err != nil {
		return fmt.Errorf("read chain %s: %w", st.nm.att, r.attRules.err)
	}
	st.records = []string{}
	for _, c := range r.attRules.ruleComments() {
		st.records = append(st.records, c)
		if k, ok := parseRecord(c); ok {
			r.portKeys = append(r.portKeys, k)
			q := getElemReq(inetTable, k.set(), k.key())
			r.ports = append(r.ports, q)
			r.round = append(r.round, q)
		}
	}
	return nil
}

// takeGuardRules keeps each dumped guard chain's rule comments. A chain
// whose element was not found by hostIf names its host interface in its
// first rule: that interface becomes a candidate.
func (r *stateReader) takeGuardRules() error {
	st := r.st
	for t, q := range r.guardRules {
		if _, done := st.guardIn[t]; done || !q.done {
			continue
		}
		if q.err != nil {
			return fmt.Errorf("read chain %s: %w", st.nm.guard, q.err)
		}
		comments := q.ruleComments()
		st.guardIn[t] = comments
		if st.guardElems[t] == "" && len(comments) > 0 {
			if fl := strings.Fields(comments[0]); len(fl) >= 3 && fl[0] == "nswire" && fl[1] == "guard" && fl[2] != r.hostIf {
				r.askCand(t, fl[2])
			}
		}
	}
	return nil
}

// takeCands keeps, per table, the candidate whose guard element points at
// the attachment's guard chain, and its icc=false element if it is ours.
func (r *stateReader) takeCands() error {
	st := r.st
	for _, c := range r.cands {
		if c.checked || !c.guard.done {
			continue
		}
		c.checked = true
		if !slices.Contains(st.guardChains, c.t) || st.guardElems[c.t] != "" {
			continue
		}
		e, err := c.guard.elem()
		if err != nil {
			return err
		}
		if !e.found || e.chain != st.nm.guard {
			continue
		}
		st.guardElems[c.t] = c.h
		if c.noicc == nil {
			continue
		}
		if e, err = c.noicc.elem(); err != nil {
			return err
		}
		if e.found && e.comment == st.nm.owner {
			st.noICCPort = c.h
		}
	}
	return nil
}

// askNextDump adds the round's one dump, if any is left: the DNAT chain's
// rules, else one guard chain's rules still needed.
func (r *stateReader) askNextDump() {
	st := r.st
	if st.attExists && r.attRules == nil {
		r.attRules = dumpRulesReq(inetTable, st.nm.att)
		r.round = append(r.round, r.attRules)
		return
	}
	for _, t := range st.guardChains {
		if r.guardRules[t] != nil || (st.guardElems[t] != "" && !r.o.records) {
			continue
		}
		if st.guardElems[t] == "" && r.hostIf != "" && !slices.ContainsFunc(r.cands, func(c *cand) bool { return c.t == t }) {
			r.askCand(t, r.hostIf) // not asked speculatively
		}
		r.guardRules[t] = dumpRulesReq(t, st.nm.guard)
		r.round = append(r.round, r.guardRules[t])
		return
	}
}

// takePorts keeps the recorded port elements that point at the DNAT chain.
func (r *stateReader) takePorts() error {
	for i, q := range r.ports {
		e, err := q.elem()
		if err != nil {
			return err
		}
		if e.found && e.chain == r.st.nm.att {
			r.st.ports = append(r.st.ports, r.portKeys[i])
		}
	}
	return nil
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
