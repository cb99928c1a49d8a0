package firewall

import (
	"errors"
	"fmt"
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
	mu sync.Mutex
	fd int
	q  *nlConn         // hot path: pipelined GETs and transactions (nl.go)
	nl *netlink.Handle // conntrack; opened on first use
}

// New opens the netlink socket in the namespace.
func New(o Options) (*Firewall, error) {
	fd := o.NetNSFd
	if fd < 0 {
		fd = 0
	}
	f := &Firewall{fd: fd}
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
	if f.nl != nil {
		f.nl.Close()
	}
}

// commit sends tx as one transaction, or reports its encoding error.
func (f *Firewall) commit(tx *txn) error {
	if tx.err != nil {
		return tx.err
	}
	return f.q.batch(tx.msgs)
}

// Add installs everything of one attachment in a single nftables
// transaction: it all applies or nothing does. Adding an attachment that
// already exists replaces its state. The first ADD on a host, and the
// first after the tables changed layout, were flushed or lost a chain's
// rules, rebuilds nswire's tables first (layout.go).
//
// Netlink traffic of a fresh ADD: one pipelined round of GETs (tables of
// this layout? attachment's chains present?), one more per address family
// when a port is published on every host address, and the transaction.
func (f *Firewall) Add(a *Attachment) error {
	if err := validateAttachment(a); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := portKeys(a)
	nm := namesOf(a.ID())
	var err error
	// Read again after a rebuild, or when something vanished between
	// the read and the commit (ENOENT).
	for attempt := 0; attempt < 3; attempt++ {
		err = f.addOnce(a, nm, keys)
		if !errors.Is(err, errRebuilt) && !isNotFound(err) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			if c := f.diagnoseConflict(nm, keys); c != nil {
				return c
			}
		}
		return fmt.Errorf("firewall: add %s: %w", nm.owner, err)
	}
	f.flushUDP(keys)
	return nil
}

// addOnce reads the attachment's state and the tables' stamps in one
// round, then replaces the state in one transaction.
func (f *Firewall) addOnce(a *Attachment, nm names, keys []portKey) error {
	stamps := stampProbes()
	network := networkAsserts(a.Net, false)
	extra := stampRequests(stamps)
	for _, na := range network {
		extra = append(extra, na.probe()...)
	}
	st, err := f.readState(nm, readOpts{extra: extra, keys: keys})
	if err != nil {
		return err
	}
	if !allCurrent(stamps) {
		return f.rebuild(stamps)
	}
	local, err := f.localAddrs(keys)
	if err != nil {
		return err
	}
	tx := &txn{}
	// Replace semantics: drop what a previous ADD left, then add.
	if err := f.queueDelete(tx, st, a.HostIf, false); err != nil {
		return err
	}
	queueNetwork(tx, network)
	queuePorts(tx, nm, keys, local)
	queueGuard(tx, a, nm)
	return f.commit(tx)
}

// diagnoseConflict finds which key made the transaction fail with EEXIST
// and who holds it, for a precise CNI error.
func (f *Firewall) diagnoseConflict(nm names, keys []portKey) error {
	local, err := f.localAddrs(keys)
	if err != nil {
		return nil
	}
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
		if !k.wildcard {
			_ = flt.AddIP(netlink.ConntrackOrigDstIP, k.hostIP)
		}
		fam := netlink.InetFamily(unix.AF_INET)
		if k.fam == ipv6 {
			fam = unix.AF_INET6
		}
		// Best effort: a failure leaves stale entries that time out.
		_, _ = h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, flt)
	}
}
