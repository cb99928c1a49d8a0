package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"github.com/nswire/nswire/pkg/ident"
)

// Addresses lists, for each attachment of network, the addresses its
// anti-spoofing record lets it send from. It lists chains: a recovery
// path (the IPAM store was lost), never ADD's or DEL's.
func (f *Firewall) Addresses(network string) (map[ident.Attachment][]net.IP, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prefix := guardPrefix + netTag(network) + "-"
	out := map[ident.Attachment][]net.IP{}
	for _, t := range guardTables {
		chains, err := f.chainNames(t.Family)
		if err != nil {
			return nil, err
		}
		for _, ch := range chains {
			if !strings.HasPrefix(ch, prefix) {
				continue
			}
			comments, err := f.chainComments(t, ch)
			if err != nil {
				return nil, err
			}
			g, ok := parseGuardRecord(comments)
			if id, valid := ident.ParseAttachment(g.owner); ok && valid {
				out[id] = slices.DeleteFunc(g.ips, func(ip net.IP) bool { return !ip.IsGlobalUnicast() })
			}
		}
	}
	return out, nil
}

// GC removes the objects of every attachment of network n that is not in
// valid. It lists chains (GC is not on the ADD/DEL path and is exclusive
// with them), keeps going on errors and joins them. With no valid
// attachment left the network-level elements go too, as the network's
// record says (gcNetwork). Of n, only the name is read.
func (f *Firewall) GC(n Network, valid []types.GCAttachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := map[string]bool{}
	for _, v := range valid {
		keep[attTag(ident.Attachment{Network: n.Name, ContainerID: v.ContainerID, IfName: v.IfName})] = true
	}
	prefixTag := netTag(n.Name) + "-"
	stale := map[string]bool{}
	var errs []error
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge} {
		chains, err := f.chainNames(fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ch := range chains {
			for _, p := range []string{attPrefix, guardPrefix} {
				if tag, ok := strings.CutPrefix(ch, p+prefixTag); ok && len(tag) == 16 && !keep[tag] {
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
	if err := f.gcUnrecorded(n.Name, keep); err != nil {
		errs = append(errs, err)
	}
	if len(valid) == 0 {
		errs = append(errs, f.gcNetwork(n.Name))
	}
	return errors.Join(errs...)
}

// gcNetwork removes the network-level elements of a network left without
// attachments, as its record says they were made. A network without a
// record (another network took its subnets over, or the table was
// flushed) owns none: elements of its subnets may be the new owner's.
func (f *Firewall) gcNetwork(name string) error {
	rules := dumpRulesReq(inetTable, chainNetworks)
	if err := f.q.exchange(rules); err != nil {
		return fmt.Errorf("firewall: gc network %s: %w", name, err)
	}
	for _, rec := range parseNetworks(rules.ruleComments()) {
		if rec.Name != name || len(rec.Subnets) == 0 {
			continue
		}
		tx := &txn{}
		queueNetwork(tx, networkAsserts(rec, true))
		if err := f.commit(tx); err != nil && !isNotFound(err) {
			return fmt.Errorf("firewall: gc network %s: %w", name, err)
		}
	}
	return nil
}

// gcUnrecorded removes the guard elements of attachments of network that
// are not kept and whose record chain is gone (someone deleted or flushed
// it, so the chain listing above could not find them). The owner is the
// comment of the port's element in the set guarded.
func (f *Firewall) gcUnrecorded(network string, keep map[string]bool) error {
	for _, t := range guardTables {
		els, err := f.listElems(t, setGuarded)
		if err != nil {
			return fmt.Errorf("firewall: gc: %w", err)
		}
		for _, e := range els {
			id, ok := ident.ParseAttachment(e.comment)
			if !ok || id.Network != network || keep[attTag(id)] {
				continue
			}
			g, err := f.listGuard(t, string(bytes.TrimRight(e.key, "\x00")))
			if err == nil {
				tx := &txn{}
				queueUnguard(tx, t, g)
				err = f.commit(tx)
			}
			if err != nil {
				return fmt.Errorf("firewall: gc %s: %w", e.comment, err)
			}
		}
	}
	return nil
}
