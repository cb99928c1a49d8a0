package firewall

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// The networks that made attachments on this host, each with what it
// owns (its subnets and bridge) and the settings its network-level
// elements were made from, are recorded in the inet table's regular chain
// "networks": one rule without expressions per fact, its comment one of
//
//	net <name> <bridge or -> <flags or ->
//	subnet <name> <cidr>
//	nomasq <name> <cidr>
//
// They live beside the state they describe, so they vanish with it (a
// reboot, a deleted namespace, a flushed table) and are per network
// namespace. pkg/plugin decides who owns what; this file only stores it.
const chainNetworks = "networks"

// NetworksLockPath is the host-wide lock over the records: held shared by
// every ADD until it ends, exclusively by whoever changes the records
// (pkg/plugin's owner.go, nswire-restore). One file for the whole host,
// whatever the network namespace: an exclusive hold elsewhere only delays.
const NetworksLockPath = "/run/nswire/networks.lock"

// NetworksLock is a hold on NetworksLockPath; the kernel drops it when
// the file is closed, or the process dies.
type NetworksLock struct{ f *os.File }

// LockNetworks waits for the lock, exclusive or shared.
func LockNetworks(exclusive bool) (*NetworksLock, error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := os.MkdirAll(filepath.Dir(NetworksLockPath), 0o755); err != nil {
		return nil, fmt.Errorf("network lock: %w", err)
	}
	f, err := os.OpenFile(NetworksLockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("network lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("network lock %s: %w", NetworksLockPath, err)
	}
	return &NetworksLock{f: f}, nil
}

// Release lets go of the lock; nil-safe.
func (l *NetworksLock) Release() {
	if l != nil {
		l.f.Close()
	}
}

// Flags of a network record.
const (
	flagMasq     = "masq"
	flagIso      = "iso"
	flagICC      = "icc"
	flagInternal = "internal"
)

// Networks reads the recorded networks. Only ADD calls it: on a host
// without nswire's tables of this layout, it builds them first.
func (f *Firewall) Networks() ([]Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range 3 {
		stamps := stampProbes()
		rules := dumpRulesReq(inetTable, chainNetworks)
		if err := f.q.exchange(append(stampRequests(stamps), rules)...); err != nil {
			return nil, fmt.Errorf("firewall: read networks: %w", err)
		}
		if !allCurrent(stamps) {
			if err := f.rebuild(stamps); !errors.Is(err, errRebuilt) {
				return nil, err
			}
			continue
		}
		if rules.err != nil && !isNotFound(rules.err) {
			return nil, fmt.Errorf("firewall: read networks: %w", rules.err)
		}
		return parseNetworks(rules.ruleComments()), nil
	}
	return nil, errors.New("firewall: nswire's tables were rebuilt three times in a row; retry")
}

// SetNetworks replaces the recorded networks with nets in one
// transaction. The caller holds LockNetworks exclusively.
func (f *Firewall) SetNetworks(nets []Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	tx := &txn{}
	tx.addChain(inetTable, chainNetworks) // a no-op unless deleted by hand
	tx.flushChain(inetTable, chainNetworks)
	for _, n := range nets {
		for _, note := range networkRecord(n) {
			tx.addRecord(inetTable, chainNetworks, note)
		}
	}
	if err := f.commit(tx); err != nil {
		return fmt.Errorf("firewall: record networks: %w", err)
	}
	return nil
}

// ReleaseNetwork removes what network n left in the tables: the elements
// of all its attachments and its network-level elements. The caller has
// found that none of its attachments is alive. It lists chains, as GC does.
func (f *Firewall) ReleaseNetwork(n Network) error {
	return f.GC(n, nil)
}

// DropNoMasquerade removes the no-masquerade pairs of n's subnets to
// gone: destinations a live network's configuration no longer lists. The
// pairs are n's alone, since live networks' subnets never overlap.
func (f *Firewall) DropNoMasquerade(n Network, gone []*net.IPNet) error {
	if len(gone) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var drop []*netAssert
	for _, a := range networkAsserts(Network{Subnets: n.Subnets, NoMasquerade: gone}, true) {
		if a.set == sN(nsNoMasq, ipv4) || a.set == sN(nsNoMasq, ipv6) {
			drop = append(drop, a)
		}
	}
	tx := &txn{}
	queueNetwork(tx, drop)
	if err := f.commit(tx); err != nil {
		return fmt.Errorf("firewall: network %s: drop no-masquerade destinations: %w", n.Name, err)
	}
	return nil
}

func networkRecord(n Network) []string {
	bridge := n.Bridge
	if bridge == "" {
		bridge = "-"
	}
	var flags []string
	for _, fl := range []struct {
		on   bool
		name string
	}{{n.IPMasq, flagMasq}, {n.Isolation, flagIso}, {n.ICC, flagICC}, {n.Internal, flagInternal}} {
		if fl.on {
			flags = append(flags, fl.name)
		}
	}
	if len(flags) == 0 {
		flags = []string{"-"}
	}
	out := []string{strings.Join([]string{"net", n.Name, bridge, strings.Join(flags, ",")}, " ")}
	for _, s := range n.Subnets {
		out = append(out, "subnet "+n.Name+" "+s.String())
	}
	for _, s := range n.NoMasquerade {
		out = append(out, "nomasq "+n.Name+" "+s.String())
	}
	return out
}

// parseNetworks reads records in chain order; a record it cannot read
// (another binary's, a hand-made rule) is skipped.
func parseNetworks(notes []string) []Network {
	var out []Network
	index := map[string]int{}
	for _, note := range notes {
		f := strings.Fields(note)
		switch {
		case len(f) == 4 && f[0] == "net":
			index[f[1]] = len(out)
			out = append(out, parseNetLine(f))
		case len(f) == 3:
			i, ok := index[f[1]]
			_, cidr, err := net.ParseCIDR(f[2])
			if !ok || err != nil {
				continue
			}
			switch f[0] {
			case "subnet":
				out[i].Subnets = append(out[i].Subnets, cidr)
			case "nomasq":
				out[i].NoMasquerade = append(out[i].NoMasquerade, cidr)
			}
		}
	}
	return out
}

func parseNetLine(f []string) Network {
	n := Network{Name: f[1]}
	if f[2] != "-" {
		n.Bridge = f[2]
	}
	for _, fl := range strings.Split(f[3], ",") {
		switch fl {
		case flagMasq:
			n.IPMasq = true
		case flagIso:
			n.Isolation = true
		case flagICC:
			n.ICC = true
		case flagInternal:
			n.Internal = true
		}
	}
	return n
}

// FindNetwork is the record of network name in recs, nil if none.
func FindNetwork(recs []Network, name string) *Network {
	for i := range recs {
		if recs[i].Name == name {
			return &recs[i]
		}
	}
	return nil
}

// Conflict describes what of record r stands in n's way on this host (r
// has n's bridge, or a subnet overlapping one of n's), "" if nothing.
// Records never conflict with each other.
func Conflict(r, n Network) string {
	if r.Bridge != "" && r.Bridge == n.Bridge {
		return fmt.Sprintf("bridge %q", r.Bridge)
	}
	for _, a := range n.Subnets {
		for _, b := range r.Subnets {
			if a.Contains(b.IP) || b.Contains(a.IP) {
				return fmt.Sprintf("subnet %s overlaps subnet %s", a, b)
			}
		}
	}
	return ""
}

// HasSubnet reports whether list holds s (the same prefix).
func HasSubnet(list []*net.IPNet, s *net.IPNet) bool {
	return slices.ContainsFunc(list, func(m *net.IPNet) bool { return m.String() == s.String() })
}

// MergeSubnets is a followed by the subnets of b that a lacks.
func MergeSubnets(a, b []*net.IPNet) []*net.IPNet {
	out := slices.Clone(a)
	for _, s := range b {
		if !HasSubnet(out, s) {
			out = append(out, s)
		}
	}
	return out
}
