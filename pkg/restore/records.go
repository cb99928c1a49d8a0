package restore

import (
	"fmt"
	"slices"

	"github.com/nswire/nswire/pkg/firewall"
)

// Each network that made an attachment is recorded in nswire's inet table
// (firewall.Networks): which subnets and bridge it owns, and the settings
// of its network-level elements. The records go with a flushed table; ADD
// then judges ownership without the live networks, so a live network gets
// its record back here, built from its live attachments' intents.

// unrecorded lists the live networks without a record.
func unrecorded(recs []firewall.Network, live []*attachment) []string {
	var out []string
	for _, n := range fromIntents(live) {
		if firewall.FindNetwork(recs, n.Name) == nil {
			out = append(out, n.Name)
		}
	}
	return out
}

// fromIntents builds each live network's record: the settings of its
// newest attachment, the union of its attachments' subnets. live is in
// creation order; networks come in the order of their first attachment.
func fromIntents(live []*attachment) []firewall.Network {
	var out []firewall.Network
	for _, a := range live {
		n := a.fw.Net
		i := slices.IndexFunc(out, func(r firewall.Network) bool { return r.Name == n.Name })
		if i < 0 {
			out = append(out, n)
			continue
		}
		n.Subnets = firewall.MergeSubnets(out[i].Subnets, n.Subnets)
		out[i] = n
	}
	return out
}

// record writes the missing records, under the exclusive network lock. A
// network whose subnets or bridge another record holds now (an ADD of
// another network took them while it had no record) is reported, not
// recorded: two records never overlap.
func (p *pass) record(live []*attachment) error {
	recs, err := p.fw.Networks()
	if err != nil {
		return err
	}
	var added []string
	for _, n := range fromIntents(live) {
		if firewall.FindNetwork(recs, n.Name) != nil {
			continue
		}
		if other, what := conflictOf(recs, n); what != "" {
			p.report.Errors = append(p.report.Errors, fmt.Errorf(
				"network %q is not recorded again: its %s of network %q, recorded since; remove one network's containers", n.Name, what, other))
			continue
		}
		recs = append(recs, n)
		added = append(added, n.Name)
	}
	if len(added) == 0 {
		return nil
	}
	if err := p.fw.SetNetworks(recs); err != nil {
		return err
	}
	for _, name := range added {
		p.report.Records = append(p.report.Records, name)
		p.o.Logger.Info("network recorded again", "network", name)
	}
	return nil
}

// conflictOf names the record standing in n's way and what it holds.
func conflictOf(recs []firewall.Network, n firewall.Network) (name, what string) {
	for _, r := range recs {
		if what := firewall.Conflict(r, n); what != "" {
			return r.Name, what
		}
	}
	return "", ""
}
