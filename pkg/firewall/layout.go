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

// stampProbe asks whether table t carries this layout: a GET of the table
// (for its handle) and of its stamp chain (for its use count, the stamp
// rule). Both ride along with ADD's first round.
type stampProbe struct {
	t     *nftables.Table
	table *request
	chain *request
}

func stampProbes() []*stampProbe {
	var out []*stampProbe
	for _, t := range []*nftables.Table{inetTable, brTable} {
		out = append(out, &stampProbe{t: t, table: getTableReq(t), chain: getChainReq(t, stampChain)})
	}
	return out
}

func stampRequests(probes []*stampProbe) []*request {
	var out []*request
	for _, p := range probes {
		out = append(out, p.table, p.chain)
	}
	return out
}

// current reports whether the table is this layout's: the stamp chain is
// there and still holds its rule.
func (p *stampProbe) current() bool {
	return p.chain.err == nil && p.chain.chainUse() > 0
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
