package firewall

import (
	"bytes"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
)

// state is what exists in the kernel for one attachment, found by targeted
// lookups from its identity alone.
type state struct {
	nm          names
	attExists   bool
	ports       []portKey                    // recorded in the a- chain and present in their map with our datum
	records     []string                     // all a- chain rule comments
	guardChains []*nftables.Table            // tables holding the guard chain
	guardIn     map[*nftables.Table][]string // guard chain -> its rule comments
}

// readOpts tunes readState to its caller.
type readOpts struct {
	// extra requests ride along with the first round (at most one dump,
	// and then the a- chain is not dumped speculatively).
	extra []*request
	// speculate asks in the first round for the a- chain's rules: DEL
	// and CHECK expect the attachment to exist, a fresh ADD does not.
	speculate bool
	// keys are ports ADD is about to publish, asked for in the first
	// round: an element of ours whose record is gone (someone flushed the
	// a- chain) is replaced too, instead of refusing the exclusive add.
	keys []portKey
}

// readState reads an attachment's objects: whether the a- chain and the
// guard chain(s) exist (one GET each); their rule comments, the record of
// the elements that belong to the attachment (one dump of one chain
// each); each recorded port element (one GET each). The requests are
// pipelined: each round is one sendmsg, with at most one dump.
func (f *Firewall) readState(nm names, o readOpts) (*state, error) {
	r := newStateReader(nm, o)
	r.askFirst()
	if err := f.q.exchange(r.round...); err != nil {
		return nil, err
	}
	if err := r.takeChains(); err != nil {
		return nil, err
	}
	// Later rounds: one dump each (a- chain first, then g- chains) with
	// the GETs that the previous round made possible.
	for {
		r.round = r.round[:0]
		if err := r.takeAttRules(); err != nil {
			return nil, err
		}
		if err := r.takeGuardRules(); err != nil {
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
	st         *state
	o          readOpts
	round      []*request
	att        *request                     // GET of the ports record chain
	guard      map[*nftables.Table]*request // GET of the guard chain, per table
	attRules   *request                     // dump of the ports record chain's rules
	guardRules map[*nftables.Table]*request // dump of the guard chain's rules
	ports      []*request                   // GET of each recorded port element
	portKeys   []portKey
	own        []*request // GET of each of o.keys
}

// guardTables are the tables an attachment's guard chain may live in.
var guardTables = []*nftables.Table{brTable, inetTable}

func newStateReader(nm names, o readOpts) *stateReader {
	return &stateReader{
		st:         &state{nm: nm, guardIn: map[*nftables.Table][]string{}},
		o:          o,
		guardRules: map[*nftables.Table]*request{},
	}
}

// askFirst fills the first round: the chains by name, the caller's extra
// requests, ADD's own keys and, when speculating, the a- chain's rules.
func (r *stateReader) askFirst() {
	nm := r.st.nm
	r.att = getChainReq(inetTable, nm.att)
	r.guard = map[*nftables.Table]*request{brTable: getChainReq(brTable, nm.guard), inetTable: getChainReq(inetTable, nm.guard)}
	r.round = append([]*request{r.att, r.guard[brTable], r.guard[inetTable]}, r.o.extra...)
	for _, k := range r.o.keys {
		r.own = append(r.own, getElemReq(inetTable, k.set(), k.key()))
	}
	r.round = append(r.round, r.own...)
	if r.o.speculate && !slices.ContainsFunc(r.o.extra, func(q *request) bool { return q.dump }) {
		r.attRules = dumpRulesReq(inetTable, nm.att)
		r.round = append(r.round, r.attRules)
	}
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

// takeAttRules keeps the a- chain's rule comments and asks for the
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

// takeGuardRules keeps each dumped guard chain's rule comments.
func (r *stateReader) takeGuardRules() error {
	st := r.st
	for t, q := range r.guardRules {
		if _, done := st.guardIn[t]; done || !q.done {
			continue
		}
		if q.err != nil {
			return fmt.Errorf("read chain %s: %w", st.nm.guard, q.err)
		}
		st.guardIn[t] = q.ruleComments()
	}
	return nil
}

// askNextDump adds the round's one dump, if any is left: the a- chain's
// rules, else one guard chain's rules.
func (r *stateReader) askNextDump() {
	st := r.st
	if st.attExists && r.attRules == nil {
		r.attRules = dumpRulesReq(inetTable, st.nm.att)
		r.round = append(r.round, r.attRules)
		return
	}
	for _, t := range st.guardChains {
		if r.guardRules[t] == nil {
			r.guardRules[t] = dumpRulesReq(t, st.nm.guard)
			r.round = append(r.round, r.guardRules[t])
			return
		}
	}
}

// takePorts keeps the recorded port elements whose datum is the attachment's.
func (r *stateReader) takePorts() error {
	for i, q := range r.ports {
		e, err := q.elem()
		if err != nil {
			return err
		}
		if k := r.portKeys[i]; e.found && bytes.Equal(e.data, k.data()) && ownedBy(e.comment, r.st.nm) {
			r.st.ports = append(r.st.ports, k)
		}
	}
	for i, q := range r.own {
		e, err := q.elem()
		if err != nil {
			return err
		}
		k := r.o.keys[i]
		known := slices.ContainsFunc(r.st.ports, func(p portKey) bool { return p.set() == k.set() && bytes.Equal(p.key(), k.key()) })
		if e.found && ownedBy(e.comment, r.st.nm) && !known {
			r.st.ports = append(r.st.ports, k)
		}
	}
	return nil
}

// queueDelete removes what readState found. With dropChains false the
// chains stay (they are about to be flushed and refilled by Add). hostIf
// names the host port when a guard chain lost its record.
func (f *Firewall) queueDelete(tx *txn, st *state, hostIf string, dropChains bool) error {
	for _, k := range st.ports {
		tx.delElems(inetTable, k.set(), setElem{key: k.key()})
	}
	for _, t := range st.guardChains {
		g, ok := parseGuardRecord(st.guardIn[t])
		if !ok && hostIf == "" {
			continue
		}
		if !ok {
			var err error
			if g, err = f.listGuard(t, hostIf); err != nil {
				return err
			}
		}
		queueUnguard(tx, t, g)
	}
	if !dropChains {
		return nil
	}
	if st.attExists {
		tx.flushChain(inetTable, st.nm.att)
		tx.delChain(inetTable, st.nm.att)
	}
	for _, t := range st.guardChains {
		tx.flushChain(t, st.nm.guard)
		tx.delChain(t, st.nm.guard)
	}
	return nil
}

// listGuard finds the guard elements of host port hostIf by listing the
// guard sets of t: the slow path, taken only when someone flushed the
// attachment's record chain.
func (f *Firewall) listGuard(t *nftables.Table, hostIf string) (guardSpec, error) {
	g := guardSpec{hostIf: hostIf}
	h := ifname(hostIf)
	for _, set := range []string{setGMAC, setGIP4, setGIP6} {
		els, err := f.listElems(t, set)
		if err != nil {
			return g, err
		}
		for _, e := range els {
			v, ok := bytes.CutPrefix(e.key, h)
			switch {
			case !ok:
			case set == setGMAC && len(v) >= 6:
				g.mac = net.HardwareAddr(v[:6])
			case set == setGIP4 && len(v) == 4:
				g.ips = append(g.ips, net.IP(v))
			case set == setGIP6 && len(v) == 16:
				g.ips = append(g.ips, net.IP(v))
			}
		}
	}
	return g, nil
}

func (st *state) empty() bool {
	return !st.attExists && len(st.guardChains) == 0 && len(st.ports) == 0
}

// Del removes everything of one attachment. Only Net.Name, ContainerID and
// IfName are needed (HostIf is a fallback): the objects are found from
// names derived from the identity, and the elements pointing at them from
// the rule comments of those objects. Missing objects are success.
func (f *Firewall) Del(a *Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	nm := namesOf(a.ID())
	return f.delByNames(nm, a.HostIf)
}

func (f *Firewall) delByNames(nm names, hostIf string) error {
	var err error
	// ENOENT: something vanished between the read and the commit; read again.
	for attempt := 0; attempt < 3; attempt++ {
		var st *state
		st, err = f.readState(nm, readOpts{speculate: true})
		if err != nil || st.empty() {
			break
		}
		tx := &txn{}
		if err = f.queueDelete(tx, st, hostIf, true); err == nil {
			err = f.commit(tx)
		}
		if err == nil {
			f.flushUDP(st.ports)
		}
		if !isNotFound(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("firewall: del %s: %w", nm.owner, err)
	}
	return nil
}
