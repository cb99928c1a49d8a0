package firewall

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options configures a Firewall.
type Options struct {
	// NetNSFd is the network namespace (the "host" of the containers) to act
	// in; 0 or -1 means the caller's current namespace. The fd must stay
	// open until Close.
	NetNSFd int
}

// Firewall manages nswire's nftables tables in one network namespace. It
// caches nothing about the ruleset: every call reads what it needs from the
// kernel, so any number of processes may use the tables at once.
type Firewall struct {
	mu  sync.Mutex
	fd  int
	nft *nftables.Conn
	q   *querier
	nl  *netlink.Handle
}

// New opens the netlink sockets in the namespace.
func New(o Options) (*Firewall, error) {
	fd := o.NetNSFd
	if fd < 0 {
		fd = 0
	}
	f := &Firewall{fd: fd}
	var err error
	if f.nft, err = newConn(fd); err != nil {
		return nil, err
	}
	if f.q, err = dialQuerier(fd); err != nil {
		f.nft.CloseLasting()
		return nil, err
	}
	if fd == 0 {
		f.nl, err = netlink.NewHandle(unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	} else {
		f.nl, err = netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return f, nil
}

func newConn(fd int) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if fd > 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	return c, nil
}

// Close releases the sockets.
func (f *Firewall) Close() {
	if f.nft != nil {
		f.nft.CloseLasting()
	}
	if f.q != nil {
		f.q.close()
	}
	if f.nl != nil {
		f.nl.Close()
	}
}

// flush sends the queued batch. A queueing error leaves messages behind in
// the connection; replacing the connection drops them.
func (f *Firewall) flush(queueErr error) error {
	if queueErr != nil {
		f.nft.CloseLasting()
		if c, err := newConn(f.fd); err == nil {
			f.nft = c
		}
		return queueErr
	}
	return f.nft.Flush()
}

// EnsureTables creates or repairs nswire's tables, sets and base chains.
// Add calls it by itself when the tables are missing; it never touches
// per-attachment state.
func (f *Firewall) EnsureTables() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensureTables()
}

func (f *Firewall) ensureTables() error {
	if err := f.flush(addSkeleton(f.nft)); err != nil {
		return fmt.Errorf("create nftables table %s: %w", TableName, err)
	}
	return nil
}

// skeletonIntact reports whether the base chains still hold their rules,
// probing one chain per table (two small dumps). Missing tables report
// true: addOnce then fails with ENOENT and creates them.
func (f *Firewall) skeletonIntact() bool {
	for _, probe := range []*nftables.Chain{{Table: inetTable, Name: chainPorts}, {Table: brTable, Name: "guard-pre"}} {
		rules, err := f.nft.GetRules(probe.Table, probe)
		if err == nil && len(rules) == 0 {
			return false
		}
	}
	return true
}

// Add installs everything of one attachment in a single nftables
// transaction: it all applies or nothing does. Adding an attachment that
// already exists replaces its state.
func (f *Firewall) Add(a *Attachment) error {
	if err := validateAttachment(a); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := portKeys(a)
	local, err := f.localAddrs(keys)
	if err != nil {
		return err
	}
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	if !f.skeletonIntact() {
		// Someone flushed our tables: refill the base chains first.
		if err := f.ensureTables(); err != nil {
			return err
		}
	}
	err = f.addOnce(a, nm, keys, local)
	if isNotFound(err) {
		// First ADD on this host (or someone deleted our table).
		if err := f.ensureTables(); err != nil {
			return err
		}
		err = f.addOnce(a, nm, keys, local)
	}
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			if c := f.diagnoseConflict(nm, keys, local); c != nil {
				return c
			}
		}
		return fmt.Errorf("firewall: add %s: %w", nm.owner, err)
	}
	f.flushUDP(keys)
	return nil
}

func (f *Firewall) addOnce(a *Attachment, nm names, keys []portKey, local map[int][]net.IP) error {
	st, err := f.readState(nm, a.HostIf)
	if err != nil {
		return err
	}
	c := f.nft
	qerr := func() error {
		// Replace semantics: drop what a previous ADD left, then add.
		if err := f.queueDelete(st, false); err != nil {
			return err
		}
		if err := queueNetwork(c, a.Net, false); err != nil {
			return err
		}
		if err := queuePorts(c, nm, keys, local); err != nil {
			return err
		}
		return queueGuard(c, a, nm)
	}()
	return f.flush(qerr)
}

// queuePorts adds the attachment's DNAT chain and its map elements, plus
// the overlap assertions: adding an element with our verdict and deleting
// it in the same transaction fails with EEXIST exactly when someone else
// holds that key, and leaves nothing behind otherwise.
func queuePorts(c *nftables.Conn, nm names, keys []portKey, local map[int][]net.IP) error {
	if len(keys) == 0 {
		return nil
	}
	ch := &nftables.Chain{Table: inetTable, Name: nm.att}
	c.AddChain(ch)
	c.FlushChain(ch)
	to := &expr.Verdict{Kind: expr.VerdictGoto, Chain: nm.att}
	for _, k := range keys {
		c.AddRule(&nftables.Rule{Table: inetTable, Chain: ch, Exprs: dnatRule(k), UserData: comment(k.record())})
	}
	for _, k := range keys {
		el := []nftables.SetElement{{Key: k.key(), VerdictData: to, Comment: nm.owner}}
		if err := c.SetAddElements(setDef(inetTable, k.set()), el); err != nil {
			return err
		}
	}
	for _, k := range keys {
		for _, o := range overlapping(k, local) {
			el := []nftables.SetElement{{Key: o.key(), VerdictData: to}}
			s := setDef(inetTable, o.set())
			if err := c.SetAddElements(s, el); err != nil {
				return err
			}
			if err := c.SetDeleteElements(s, el); err != nil {
				return err
			}
		}
	}
	return nil
}

// overlapping lists the keys of other maps that would capture the same
// packets as k: the wildcard for a specific address, and the host's own
// addresses for a wildcard.
func overlapping(k portKey, local map[int][]net.IP) []portKey {
	if !k.any {
		o := k
		o.any, o.hostIP = true, nil
		return []portKey{o}
	}
	var out []portKey
	for _, ip := range local[k.fam] {
		o := k
		o.any, o.hostIP = false, ip
		out = append(out, o)
	}
	return out
}

// localAddrs lists the addresses that address-specific mappings use: the
// only ones a wildcard mapping can clash with. It reads the two
// address-specific maps (one element per such mapping, usually none), not
// the host's addresses, which grow with every container.
func (f *Firewall) localAddrs(keys []portKey) (map[int][]net.IP, error) {
	if !slices.ContainsFunc(keys, func(k portKey) bool { return k.any }) {
		return nil, nil
	}
	out := map[int][]net.IP{}
	for _, fam := range []int{4, 6} {
		els, err := f.nft.GetSetElements(setDef(inetTable, portsSet(fam, false)))
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list address-specific ports: %w", err)
		}
		size := net.IPv4len
		if fam == 6 {
			size = net.IPv6len
		}
		seen := map[string]bool{}
		for _, e := range els {
			if len(e.Key) < size || seen[string(e.Key[:size])] {
				continue
			}
			seen[string(e.Key[:size])] = true
			out[fam] = append(out[fam], net.IP(slices.Clone(e.Key[:size])))
		}
	}
	return out, nil
}

func dnatRule(k portKey) []expr.Any {
	natFam := uint32(unix.NFPROTO_IPV4)
	if k.fam == 6 {
		natFam = unix.NFPROTO_IPV6
	}
	e := cat(nfproto(k.fam), []expr.Any{
		meta(expr.MetaKeyL4PROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{protoNums[k.proto]}),
		load(expr.PayloadBaseTransportHeader, 2, 2, reg1), cmp(expr.CmpOpEq, reg1, be16(k.hostPort)),
	})
	if !k.any {
		e = append(e, daddr(k.fam, reg1), cmp(expr.CmpOpEq, reg1, ipBytes(k.hostIP, k.fam)))
	}
	return append(e,
		&expr.Immediate{Register: 1, Data: ipBytes(k.ctrIP, k.fam)},
		&expr.Immediate{Register: 2, Data: be16(k.ctrPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFam, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
}

// guardTable is where an attachment's anti-spoof chain lives: bridged
// frames are seen by the bridge family, routed packets by inet.
func guardTable(n Network) *nftables.Table {
	if n.Bridge != "" {
		return brTable
	}
	return inetTable
}

type guardRule struct {
	exprs   []expr.Any
	comment string
}

// guardRules is the anti-spoof chain of an attachment: frames from the
// container's port must carry its MAC and, for IPv4, IPv6 and ARP, one of
// its addresses (plus the IPv6 link-local address derived from the MAC and
// the unspecified address used by DAD and MLD). Anything else is dropped.
func guardRules(a *Attachment) []guardRule {
	bridge := a.Net.Bridge != ""
	proto := func(fam int) []expr.Any {
		if !bridge {
			return nfproto(fam)
		}
		if fam == 4 {
			return etherType(unix.ETH_P_IP)
		}
		return etherType(unix.ETH_P_IPV6)
	}
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	rules := []guardRule{{
		// Record: no-op match naming the host interface, read back by DEL.
		exprs:   []expr.Any{meta(expr.MetaKeyIIFNAME, reg1), cmp(expr.CmpOpEq, reg1, ifname(a.HostIf))},
		comment: "nswire guard " + a.HostIf + " " + nm.owner,
	}}
	drop := verdict(expr.VerdictDrop)
	ret := verdict(expr.VerdictReturn)
	if a.MAC != nil {
		rules = append(rules, guardRule{cat([]expr.Any{ll(6, 6, reg1), cmp(expr.CmpOpNeq, reg1, a.MAC), drop}), "mac " + a.MAC.String()})
	}
	var v4, v6 []net.IP
	for _, n := range a.IPs {
		if famOf(n.IP) == 4 {
			v4 = append(v4, n.IP.To4())
		} else {
			v6 = append(v6, n.IP.To16())
		}
	}
	if bridge {
		arp := etherType(unix.ETH_P_ARP)
		if a.MAC != nil {
			rules = append(rules, guardRule{cat(arp, []expr.Any{nh(8, 6, reg1), cmp(expr.CmpOpNeq, reg1, a.MAC), drop}), "arp-mac " + a.MAC.String()})
		}
		for _, ip := range append(slices.Clone(v4), net.IPv4zero.To4()) {
			rules = append(rules, guardRule{cat(arp, []expr.Any{nh(14, 4, reg1), cmp(expr.CmpOpEq, reg1, ip), ret}), "arp " + ip.String()})
		}
	}
	for _, ip := range v4 {
		rules = append(rules, guardRule{cat(proto(4), []expr.Any{saddr(4, reg1), cmp(expr.CmpOpEq, reg1, ip), ret}), "ip " + ip.String()})
	}
	v6 = append(v6, net.IPv6unspecified)
	if a.MAC != nil && len(a.MAC) == 6 {
		v6 = append(v6, linkLocal(a.MAC))
		for _, ip := range v6 {
			rules = append(rules, guardRule{cat(proto(6), []expr.Any{saddr(6, reg1), cmp(expr.CmpOpEq, reg1, ip.To16()), ret}), "ip " + ip.String()})
		}
	} else {
		for _, ip := range v6 {
			rules = append(rules, guardRule{cat(proto(6), []expr.Any{saddr(6, reg1), cmp(expr.CmpOpEq, reg1, ip.To16()), ret}), "ip " + ip.String()})
		}
		// Without a MAC the link-local address is unknown: allow fe80::/10.
		rules = append(rules, guardRule{cat(proto(6), []expr.Any{nh(8, 2, reg1),
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
			cmp(expr.CmpOpEq, reg1, []byte{0xfe, 0x80}), ret}), "ip fe80::/10"})
	}
	return append(rules, guardRule{[]expr.Any{drop}, "drop"})
}

// linkLocal is the EUI-64 IPv6 link-local address the kernel derives from
// a MAC (addr_gen_mode 0).
func linkLocal(mac net.HardwareAddr) net.IP {
	ip := make(net.IP, 16)
	ip[0], ip[1] = 0xfe, 0x80
	copy(ip[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return ip
}

func queueGuard(c *nftables.Conn, a *Attachment, nm names) error {
	t := guardTable(a.Net)
	ch := &nftables.Chain{Table: t, Name: nm.guard}
	c.AddChain(ch)
	c.FlushChain(ch)
	for _, r := range guardRules(a) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs, UserData: comment(r.comment)})
	}
	if err := c.SetAddElements(setDef(t, setGuard), []nftables.SetElement{{
		Key: ifname(a.HostIf), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: nm.guard}, Comment: nm.owner,
	}}); err != nil {
		return err
	}
	if a.Net.Bridge != "" && !a.Net.ICC {
		return c.SetAddElements(setDef(brTable, setNoICCBr), []nftables.SetElement{{Key: ifname(a.HostIf), Comment: nm.owner}})
	}
	return nil
}

// queueNetwork asserts the network-level elements. Each ADD re-adds them
// (adding an existing element without NLM_F_EXCL is a no-op) and removes the
// ones a flag now turned off (add then delete: absent afterwards either
// way). remove drops all of them, for GC of a network with no attachments.
func queueNetwork(c *nftables.Conn, n Network, remove bool) error {
	for _, fam := range []int{4, 6} {
		var subs []*net.IPNet
		for _, s := range n.Subnets {
			if s != nil && famOf(s.IP) == fam {
				subs = append(subs, s)
			}
		}
		if len(subs) == 0 {
			continue
		}
		var single []nftables.SetElement
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
		for _, x := range []struct {
			set  string
			els  []nftables.SetElement
			want bool
		}{
			{sN(nsNets, fam), single, true},
			{sN(nsIntra, fam), pairs, true},
			{sN(nsIso, fam), single, n.Isolation},
			{sN(nsMasq, fam), single, n.IPMasq && !n.Internal},
			{sN(nsInternal, fam), single, n.Internal},
			{sN(nsNoICC, fam), pairs, !n.ICC},
			{sN(nsNoMasq, fam), pairElems(subs, noMasq, fam), true},
		} {
			if len(x.els) == 0 {
				continue
			}
			if err := assertElems(c, setDef(inetTable, x.set), x.els, x.want && !remove); err != nil {
				return err
			}
		}
	}
	return nil
}

// pairElems encodes every (source prefix . destination prefix) pair for a
// concatenated interval set.
func pairElems(srcs, dsts []*net.IPNet, fam int) []nftables.SetElement {
	var els []nftables.SetElement
	for _, s := range srcs {
		for _, d := range dsts {
			sf, sl := bounds(s, fam)
			df, dl := bounds(d, fam)
			els = append(els, nftables.SetElement{Key: concat(sf, df), KeyEnd: concat(sl, dl)})
		}
	}
	return els
}

func assertElems(c *nftables.Conn, s *nftables.Set, els []nftables.SetElement, want bool) error {
	if err := c.SetAddElements(s, els); err != nil {
		return err
	}
	if want {
		return nil
	}
	return c.SetDeleteElements(s, els)
}

// bounds returns the first and last address of a prefix.
func bounds(n *net.IPNet, fam int) (first, last []byte) {
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
func intervalElems(n *net.IPNet, fam int) []nftables.SetElement {
	first, last := bounds(n, fam)
	els := []nftables.SetElement{{Key: first}}
	end := slices.Clone(last)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return append(els, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return els
}

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
	var err error
	if st.attExists, err = f.q.chainExists(inetTable, nm.att); err != nil {
		return nil, err
	}
	if st.attExists {
		rules, err := f.nft.GetRules(inetTable, &nftables.Chain{Name: nm.att, Table: inetTable})
		if err != nil {
			return nil, fmt.Errorf("read chain %s: %w", nm.att, err)
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
				return nil, err
			}
			if e.found && e.chain == nm.att {
				st.ports = append(st.ports, k)
			}
		}
	}
	for _, t := range []*nftables.Table{brTable, inetTable} {
		ok, err := f.q.chainExists(t, nm.guard)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		rules, err := f.nft.GetRules(t, &nftables.Chain{Name: nm.guard, Table: t})
		if err != nil {
			return nil, fmt.Errorf("read chain %s: %w", nm.guard, err)
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
				return nil, err
			}
			if e.found && e.chain == nm.guard {
				st.guardElems[t] = h
				break
			}
		}
		if h := st.guardElems[t]; t == brTable && h != "" {
			e, err := f.q.getElem(t, setNoICCBr, ifname(h))
			if err != nil {
				return nil, err
			}
			if e.found && e.comment == nm.owner {
				st.noICCPort = h
			}
		}
	}
	return st, nil
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

// Addresses lists, for each attachment of network, the addresses its
// anti-spoofing chain lets it send from, keyed by owner
// ("network/containerID/ifname"). It lists chains: a recovery path (the
// IPAM store was lost), never ADD's or DEL's.
func (f *Firewall) Addresses(network string) (map[string][]net.IP, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prefix := guardPrefix + netTag(network) + "-"
	out := map[string][]net.IP{}
	for _, t := range []*nftables.Table{brTable, inetTable} {
		chains, err := f.nft.ListChainsOfTableFamily(t.Family)
		if err != nil {
			return nil, fmt.Errorf("list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != TableName || !strings.HasPrefix(ch.Name, prefix) {
				continue
			}
			rules, err := f.nft.GetRules(t, &nftables.Chain{Name: ch.Name, Table: t})
			if err != nil {
				return nil, fmt.Errorf("read chain %s: %w", ch.Name, err)
			}
			owner, ips := guardRecord(rules)
			if owner != "" {
				out[owner] = ips
			}
		}
	}
	return out, nil
}

// guardRecord reads a guard chain's owner (first rule: "nswire guard
// <hostIf> <owner>") and its unicast addresses ("ip <addr>" rules).
func guardRecord(rules []*nftables.Rule) (owner string, ips []net.IP) {
	for i, r := range rules {
		f := strings.Fields(ruleComment(r))
		if i == 0 && len(f) == 4 && f[0] == "nswire" && f[1] == "guard" {
			owner = f[3]
		}
		if len(f) == 2 && f[0] == "ip" {
			if ip := net.ParseIP(f[1]); ip != nil && ip.IsGlobalUnicast() {
				ips = append(ips, ip)
			}
		}
	}
	return owner, ips
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

// Check verifies that every object of the attachment is present and as Add
// made it, and names the first one that is not.
func (f *Firewall) Check(a *Attachment) error {
	if err := validateAttachment(a); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for t, chains := range baseChainNames {
		for _, ch := range chains {
			ok, err := f.q.chainExists(t, ch)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("firewall: nftables chain %s of table %s %s is missing", ch, familyName(t), TableName)
			}
		}
	}
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	st, err := f.readState(nm, a.HostIf)
	if err != nil {
		return err
	}
	keys := portKeys(a)
	for _, k := range keys {
		e, err := f.q.getElem(inetTable, k.set(), k.key())
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

// GC removes the objects of every attachment of network n that is not in
// valid. It lists chains (GC is not on the ADD/DEL path and is exclusive
// with them), keeps going on errors and joins them. With no valid
// attachment left the network-level elements go too.
func (f *Firewall) GC(n Network, valid []types.GCAttachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := map[string]bool{}
	for _, v := range valid {
		keep[attTag(n.Name, v.ContainerID, v.IfName)] = true
	}
	prefixTag := netTag(n.Name) + "-"
	stale := map[string]bool{}
	var errs []error
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		chains, err := f.nft.ListChainsOfTableFamily(fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("list chains: %w", err))
			continue
		}
		for _, ch := range chains {
			if ch.Table.Name != TableName {
				continue
			}
			for _, p := range []string{attPrefix, guardPrefix} {
				if tag, ok := strings.CutPrefix(ch.Name, p+prefixTag); ok && len(tag) == 16 && !keep[tag] {
					stale[tag] = true
				}
			}
		}
	}
	for _, tag := range slices.Sorted(func(yield func(string) bool) {
		for t := range stale {
			if !yield(t) {
				return
			}
		}
	}) {
		nm := names{owner: n.Name + "/gc:" + tag, att: attPrefix + prefixTag + tag, guard: guardPrefix + prefixTag + tag}
		if err := f.delByNames(nm, ""); err != nil {
			errs = append(errs, err)
		}
	}
	if len(valid) == 0 && len(n.Subnets) > 0 {
		if err := f.flush(queueNetwork(f.nft, n, true)); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("firewall: gc network %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// diagnoseConflict finds which key made the transaction fail with EEXIST
// and who holds it, for a precise CNI error.
func (f *Firewall) diagnoseConflict(nm names, keys []portKey, local map[int][]net.IP) error {
	for _, k := range keys {
		for _, o := range append([]portKey{k}, overlapping(k, local)...) {
			e, err := f.q.getElem(inetTable, o.set(), o.key())
			if err != nil || !e.found || e.chain == nm.att {
				continue
			}
			holder := e.comment
			if holder == "" {
				holder = e.chain
			}
			what := "is already published"
			if o.key() != nil && o.set() != k.set() {
				what = fmt.Sprintf("overlaps %s", o)
			}
			return types.NewError(ErrPortConflict,
				fmt.Sprintf("portMappings: %s %s by %s", k, what, holder),
				fmt.Sprintf("attachment %s", nm.owner))
		}
	}
	return nil
}

// flushUDP deletes conntrack entries of UDP published ports so that flows
// created before the mapping appeared (or towards a container that is
// gone) do not keep their old translation.
func (f *Firewall) flushUDP(keys []portKey) {
	for _, k := range keys {
		if k.proto != "udp" {
			continue
		}
		flt := &netlink.ConntrackFilter{}
		_ = flt.AddProtocol(unix.IPPROTO_UDP)
		_ = flt.AddPort(netlink.ConntrackOrigDstPort, uint16(k.hostPort))
		if !k.any {
			_ = flt.AddIP(netlink.ConntrackOrigDstIP, k.hostIP)
		}
		fam := netlink.InetFamily(unix.AF_INET)
		if k.fam == 6 {
			fam = unix.AF_INET6
		}
		// Best effort: a failure leaves stale entries that time out.
		_, _ = f.nl.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flt)
	}
}
