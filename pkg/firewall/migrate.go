package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// migratePorts moves the published ports of attachments made by the layout
// before the DNAT data maps (verdict map elements going to a- chains that
// hold the DNAT rules) into the data maps, and turns their a- chains into
// records. It runs after the base chains were rebuilt, so on an upgraded
// host once, and finds nothing to do otherwise (four empty listings).
// Moving them keeps a single place to look for who holds a port: the
// conflict checks see only the data maps.
func (f *Firewall) migratePorts() error { return retryMove(f.migratePortsOnce) }

// migrateGuards moves the anti-spoofing of attachments made by the layout
// before the guard sets (a g- chain of match-and-return rules, reached
// through the guard map) into the sets, and turns those chains into
// records: CHECK then sees them as this layout made them. Like
// migratePorts it runs after the base chains were rebuilt.
func (f *Firewall) migrateGuards() error { return retryMove(f.migrateGuardsOnce) }

// retryMove runs one moving transaction again when a concurrent one
// committed first: our deletes then fail with ENOENT and a new listing
// finds what is left.
func retryMove(once func() error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = once(); !isNotFound(err) && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return err
}

func (f *Firewall) migrateGuardsOnce() error {
	c := f.enc.c
	for _, t := range guardTables {
		els, err := f.listElems(t, setGuard)
		if err != nil {
			return f.commit(err)
		}
		for _, e := range els {
			if !strings.HasPrefix(e.chain, guardPrefix) {
				continue
			}
			comments, err := f.chainComments(t, e.chain)
			if err != nil {
				return f.commit(err)
			}
			g, ok := parseGuardRecord(comments)
			if !ok || string(ifname(g.hostIf)) != string(e.key) {
				continue // not nswire's record: left to the legacy rule
			}
			if err := c.SetDeleteElements(setDef(t, setGuard), []nftables.SetElement{{Key: e.key}}); err != nil {
				return f.commit(err)
			}
			if err := queueRecordedGuard(c, t, &nftables.Chain{Table: t, Name: e.chain}, g); err != nil {
				return f.commit(err)
			}
		}
	}
	if err := f.commit(nil); err != nil {
		return fmt.Errorf("firewall: move anti-spoofing to the guard sets: %w", err)
	}
	return nil
}

func (f *Firewall) migratePortsOnce() error {
	records := map[string][]string{} // a- chain -> its rule comments
	moved := map[string]bool{}       // a- chains whose elements moved
	c := f.enc.c
	for _, fam := range []int{4, 6} {
		for _, any := range []bool{false, true} {
			legacy := setDef(inetTable, legacyPortsSet(fam, any))
			els, err := f.listElems(inetTable, legacy.Name)
			if err != nil {
				return f.commit(err)
			}
			for _, e := range els {
				k, ok, err := f.legacyKey(records, fam, any, e)
				if err != nil {
					return f.commit(err)
				}
				if !ok {
					continue // not nswire's record: left to the legacy rules
				}
				moved[e.chain] = true
				if err := c.SetDeleteElements(legacy, []nftables.SetElement{{Key: e.key}}); err != nil {
					return f.commit(err)
				}
				el := []nftables.SetElement{{Key: e.key, Val: k.data(), Comment: e.comment}}
				if err := c.SetAddElements(setDef(inetTable, k.set()), el); err != nil {
					return f.commit(err)
				}
			}
		}
	}
	for name := range moved {
		ch := &nftables.Chain{Table: inetTable, Name: name}
		c.FlushChain(ch)
		for _, cm := range records[name] {
			c.AddRule(&nftables.Rule{Table: inetTable, Chain: ch, UserData: comment(cm)})
		}
	}
	if err := f.commit(nil); err != nil {
		return fmt.Errorf("firewall: move published ports to the DNAT maps: %w", err)
	}
	return nil
}

// legacyKey finds the published key a legacy verdict map element stands
// for in the records (DNAT rule comments) of the a- chain it goes to,
// reading that chain once into records.
func (f *Firewall) legacyKey(records map[string][]string, fam int, any bool, e elem) (portKey, bool, error) {
	if !strings.HasPrefix(e.chain, attPrefix) || len(e.chain) < 16 {
		return portKey{}, false, nil
	}
	name := e.chain
	if _, read := records[name]; !read {
		comments, err := f.chainComments(inetTable, name)
		if err != nil {
			return portKey{}, false, err
		}
		records[name] = comments
	}
	for _, cm := range records[name] {
		if k, ok := parseRecord(cm); ok && k.fam == fam && k.any == any && string(k.key()) == string(e.key) {
			return k, true, nil
		}
	}
	return portKey{}, false, nil
}
