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
