package firewall

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
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
	q   *nlConn         // hot path: pipelined GETs and transactions (nl.go)
	enc *encoder        // encodes transactions for q
	nft *nftables.Conn  // listings (GC, Addresses, repair); opened on first use
	nl  *netlink.Handle // conntrack; opened on first use
}

// New opens the netlink socket in the namespace.
func New(o Options) (*Firewall, error) {
	fd := o.NetNSFd
	if fd < 0 {
		fd = 0
	}
	f := &Firewall{fd: fd, enc: newEncoder()}
	var err error
	if f.q, err = dialNL(fd); err != nil {
		return nil, err
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

// conn is the google/nftables connection used for listings.
func (f *Firewall) conn() (*nftables.Conn, error) {
	if f.nft == nil {
		c, err := newConn(f.fd)
		if err != nil {
			return nil, err
		}
		f.nft = c
	}
	return f.nft, nil
}

func (f *Firewall) handle() (*netlink.Handle, error) {
	if f.nl == nil {
		var err error
		if f.fd == 0 {
			f.nl, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
		} else {
			f.nl, err = netlink.NewHandleAt(netns.NsHandle(f.fd), unix.NETLINK_NETFILTER)
		}
		if err != nil {
			f.nl = nil
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
	}
	return f.nl, nil
}

// Close releases the sockets.
func (f *Firewall) Close() {
	if f.q != nil {
		f.q.close()
	}
	if f.nft != nil {
		f.nft.CloseLasting()
	}
	if f.nl != nil {
		f.nl.Close()
	}
}

// commit sends what is queued on the encoder as one transaction. A
// queueing error drops the queue and is returned.
func (f *Firewall) commit(queueErr error) error {
	msgs, err := f.enc.take()
	if queueErr != nil {
		return queueErr
	}
	if err != nil {
		return err
	}
	return f.q.batch(exclusive(msgs))
}

// EnsureTables creates or repairs nswire's tables, sets and base chains.
// Add calls it by itself when the tables are missing or flushed; it never
// touches per-attachment state.
func (f *Firewall) EnsureTables() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensureTables()
}

func (f *Firewall) ensureTables() error {
	if err := f.commit(addSkeleton(f.enc.c)); err != nil {
		return fmt.Errorf("create nftables table %s: %w", TableName, err)
	}
	if err := f.migratePorts(); err != nil {
		return err
	}
	return f.migrateGuards()
}

// portsUse is the use count of the intact inet chain "ports": its 8 rules
// plus the gotos of nat-pre and nat-out. Flushing the table (or any of
// those chains) lowers it, and so does the layout before the DNAT data
// maps (4 rules).
const portsUse = 10

// guardPreRules is the number of rules of the bridge chain guard-pre
// (guardBase(true)); a test keeps the two in step. Any other count means
// the chain was flushed, or made by the layout before the guard sets.
const guardPreRules = 11

// skeletonProbes ask whether the base chains still hold their rules: a
// GET of the inet chain "ports" (its use count) and a listing of the
// bridge chain guard-pre. They ride along with the first round of
// readState.
func skeletonProbes() (ports, guardPre *request) {
	return getChainReq(inetTable, chainPorts), dumpRulesReq(brTable, "guard-pre")
}

// skeletonIntact reads the probes' answers. Missing tables report false
// as well: ensureTables creates them.
func skeletonIntact(ports, guardPre *request) bool {
	if ports.err != nil || ports.chainUse() < portsUse {
		return false
	}
	return guardPre.err == nil && len(guardPre.msgs) == guardPreRules
}

// Add installs everything of one attachment in a single nftables
// transaction: it all applies or nothing does. Adding an attachment that
// already exists replaces its state.
//
// Netlink traffic of a fresh ADD: one pipelined round of GETs (base chains
// intact? attachment's chains present?), one more per address family when
// a port is published on every host address, and the transaction.
func (f *Firewall) Add(a *Attachment) error {
	if err := validateAttachment(a); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := portKeys(a)
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	ports, guardPre := skeletonProbes()
	netAsserts := networkAsserts(a.Net, false)
	extra := []*request{ports, guardPre}
	for _, na := range netAsserts {
		extra = append(extra, na.probe()...)
	}
	st, err := f.readState(nm, readOpts{extra: extra, keys: keys})
	if err != nil {
		return fmt.Errorf("firewall: add %s: %w", nm.owner, err)
	}
	if !skeletonIntact(ports, guardPre) {
		// First ADD on this host, or someone flushed or deleted our
		// tables: (re)create them and refill the base chains first.
		if err := f.ensureTables(); err != nil {
			return err
		}
	}
	local, err := f.localAddrs(keys)
	if err != nil {
		return err
	}
	err = f.addOnce(a, nm, st, keys, local, netAsserts)
	if isNotFound(err) {
		// Someone deleted our table between the probe and the commit.
		if err := f.ensureTables(); err != nil {
			return err
		}
		if st, err = f.readState(nm, readOpts{keys: keys}); err != nil {
			return fmt.Errorf("firewall: add %s: %w", nm.owner, err)
		}
		err = f.addOnce(a, nm, st, keys, local, networkAsserts(a.Net, false))
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

func (f *Firewall) addOnce(a *Attachment, nm names, st *state, keys []portKey, local map[int][]net.IP, network []*netAssert) error {
	c := f.enc.c
	qerr := func() error {
		// Replace semantics: drop what a previous ADD left, then add.
		if err := f.queueDelete(st, a.HostIf, false); err != nil {
			return err
		}
		if err := queueNetwork(c, network); err != nil {
			return err
		}
		if err := queuePorts(c, nm, keys, local); err != nil {
			return err
		}
		return queueGuard(c, a, nm)
	}()
	return f.commit(qerr)
}

// diagnoseConflict finds which key made the transaction fail with EEXIST
// and who holds it, for a precise CNI error.
func (f *Firewall) diagnoseConflict(nm names, keys []portKey, local map[int][]net.IP) error {
	for _, k := range keys {
		for _, o := range append([]portKey{k}, overlapping(k, local)...) {
			e, err := f.getElem(inetTable, o.set(), o.key())
			if err != nil || !e.found || ownedBy(e.comment, nm) {
				continue
			}
			holder := e.comment
			if holder == "" {
				holder = "another attachment"
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
		h, err := f.handle()
		if err != nil {
			return
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
		_, _ = h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flt)
	}
}
