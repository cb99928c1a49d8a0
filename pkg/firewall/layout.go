package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// layoutVersion numbers the layout of nswire's tables (doc.go). Change it
// whenever a binary would misread or misuse tables an earlier binary made:
// the first ADD of the new binary then rebuilds them.
const layoutVersion = 2

// Each table carries the version as the name of a regular chain holding
// one rule without expressions (nothing jumps to it). The rule makes a
// flush visible: `nft flush table` removes rules, not chains.
var (
	stampChain = "layout-" + strconv.Itoa(layoutVersion)
	stampNote  = "nswire layout " + strconv.Itoa(layoutVersion)
)

// stampProbe asks whether table t is this layout's as it stands: a GET of
// the table (for its handle), of its stamp chain and of each chain of its
// skeleton (for their use counts). All ride along with ADD's first round:
// a few targeted GETs, never a dump.
type stampProbe struct {
	t     *nftables.Table
	table *request
	chain *request
	skel  []skeletonProbe
}

// skeletonProbe is the GET of one chain of a table's skeleton.
type skeletonProbe struct {
	skeletonChain
	r *request
}

func stampProbes() []*stampProbe {
	var out []*stampProbe
	for _, t := range []*nftables.Table{inetTable, brTable} {
		p := &stampProbe{t: t, table: getTableReq(t), chain: getChainReq(t, stampChain)}
		for _, ch := range skeletonUse()[t] {
			p.skel = append(p.skel, skeletonProbe{ch, getChainReq(t, ch.name)})
		}
		out = append(out, p)
	}
	return out
}

func stampRequests(probes []*stampProbe) []*request {
	var out []*request
	for _, p := range probes {
		out = append(out, p.table, p.chain)
		for _, s := range p.skel {
			out = append(out, s.r)
		}
	}
	return out
}

// current reports whether the table is this layout's: the stamp chain is
// there and still holds its rule, and every chain of the skeleton is there
// with at least the rules (and jumps to it) the layout gives it. A table
// that is not is rebuilt by the next ADD.
func (p *stampProbe) current() bool {
	why, err := p.stale()
	return why == "" && err == nil
}

// stale says why the table is not current ("" when it is). A GET that
// failed otherwise than with ENOENT is returned as err (current counts the
// table as stale then, as it always has for its stamp).
func (p *stampProbe) stale() (string, error) {
	switch ok, err := p.table.exists(); {
	case err != nil:
		return "", err
	case !ok:
		return "is missing", nil
	}
	switch ok, err := p.chain.exists(); {
	case err != nil:
		return "", err
	case !ok:
		return fmt.Sprintf("has no chain %s: another layout's", stampChain), nil
	case p.chain.chainUse() == 0:
		// `nft flush table` keeps sets and chains but drops every rule.
		return "was flushed (the rules of its layout are gone)", nil
	}
	// A missing chain first: it also takes the jumps it held to another.
	for _, s := range p.skel {
		switch ok, err := s.r.exists(); {
		case err != nil:
			return "", err
		case !ok:
			return fmt.Sprintf("lost chain %s", s.name), nil
		}
	}
	for _, s := range p.skel {
		if s.r.chainUse() < s.use {
			// `nft flush chain`, `nft delete rule`: the use count is the
			// chain's rules plus the jumps and gotos to it.
			return fmt.Sprintf("lost rules of chain %s (use count %d, the layout gives it %d)", s.name, s.r.chainUse(), s.use), nil
		}
	}
	return "", nil
}

// checkStamps reports the first table that is not current as a
// *Mismatch, and a GET that failed as a plain error.
func checkStamps(probes []*stampProbe) error {
	for _, p := range probes {
		why, err := p.stale()
		if err != nil {
			return fmt.Errorf("firewall: read table %s %s: %w", familyName(p.t), TableName, err)
		}
		if why != "" {
			return mismatch("nftables table %s %s %s: the next ADD rebuilds it", familyName(p.t), TableName, why)
		}
	}
	return nil
}

// CheckTables reports (as a *Mismatch) a table of nswire's that the next
// Add or Networks rebuilds: missing, of another layout, flushed, or a
// chain of its layout missing or short of rules. Any other error means the
// tables could not be read. It changes nothing: one round of GETs.
func (f *Firewall) CheckTables() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamps := stampProbes()
	if err := f.q.exchange(stampRequests(stamps)...); err != nil {
		return fmt.Errorf("firewall: check tables: %w", err)
	}
	return checkStamps(stamps)
}

// handle is the table's handle, 0 if it is missing.
func (p *stampProbe) handle() uint64 {
	var h uint64
	p.table.replies(func(ad *netlink.AttributeDecoder) {
		for ad.Next() {
			if ad.Type() == nftaTableHandle && len(ad.Bytes()) == 8 {
				h = binary.BigEndian.Uint64(ad.Bytes())
			}
		}
	})
	return h
}

func allCurrent(probes []*stampProbe) bool {
	for _, p := range probes {
		if !p.current() {
			return false
		}
	}
	return true
}

// errRebuilt asks the caller to read the state again: the tables were
// rebuilt, by this process or by another one that got there first.
var errRebuilt = errors.New("nftables tables rebuilt")

// rebuild deletes and recreates the tables whose probe is not current,
// and touches no other table. Two transactions, each of which fails if
// another process rebuilt first: the delete names the table by the handle
// the probe saw (a replaced table has a new one: ENOENT), the creation is
// exclusive (EEXIST). Either way the caller reads again. Elements of the
// rebuilt tables are lost: attachments made before get theirs back at
// their next ADD.
func (f *Firewall) rebuild(probes []*stampProbe) error {
	stale := &txn{}
	var tables []*nftables.Table
	for _, p := range probes {
		if p.current() {
			continue
		}
		if h := p.handle(); h != 0 {
			stale.delTable(p.t, h)
		}
		tables = append(tables, p.t)
	}
	if err := f.commit(stale); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete nftables tables of another layout: %w", err)
	}
	if err := f.createTables(tables); err != nil && !errors.Is(err, unix.EEXIST) {
		return createError(err)
	}
	return errRebuilt
}

// ErrKernelFeature marks a table creation the kernel refused for want of
// a feature: a module not loaded (and not loadable), or not built.
var ErrKernelFeature = errors.New("the kernel lacks a feature nswire's firewall uses")

// nftModules are the modules behind the expressions and chain types of the
// tables, beyond nf_tables itself (see skeleton.go).
const nftModules = "nf_tables nft_chain_nat nft_nat nft_masq nft_ct nft_fib_inet"

// createError explains a failed table creation. google/nftables reports
// one error per message: the first errno stands for all of them. A
// creation that references an expression, chain type or set type the
// kernel lacks gets ENOENT (expression, chain type) or EOPNOTSUPP (set
// type); EAFNOSUPPORT means a table family is not built. That errno is
// named, not wrapped: an ENOENT would send the callers, which retry on
// ENOENT, rebuilding three times.
func createError(err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("create nftables tables %s: %w", TableName, err)
	}
	switch errno {
	case unix.ENOENT, unix.EOPNOTSUPP, unix.EAFNOSUPPORT:
		return fmt.Errorf("create nftables tables %s (the kernel answered %q): %w: modprobe -a %s; concatenated interval sets need Linux 5.6 or later, the bridge table a kernel built with CONFIG_NF_TABLES_BRIDGE",
			TableName, errno.Error(), ErrKernelFeature, nftModules)
	}
	return fmt.Errorf("create nftables tables %s: %w", TableName, errno)
}

// createTables creates tables as this layout makes them, in one
// transaction sent by google/nftables (their rules hold expressions that
// nswire does not encode itself).
func (f *Firewall) createTables(tables []*nftables.Table) error {
	// A connection of its own: a queueing error leaves nothing queued on
	// the one used for listings.
	c, err := newConn(f.fd)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	for _, t := range tables {
		if err := addSkeleton(c, t); err != nil {
			return err
		}
	}
	return c.Flush()
}
