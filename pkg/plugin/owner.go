package plugin

import (
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/ipam"
	"github.com/nswire/nswire/pkg/link"
)

// Which network owns which subnets and bridge on this host.
//
// The rule: a subnet, and a bridge, belong to the network that has live
// attachments on this host. An ADD whose subnets overlap, or whose bridge
// is, another live network's is refused (code 7). A network without live
// attachments owns nothing: the ADD that needs its subnet or bridge
// releases what it left (firewall elements, bridge addresses, an empty
// bridge nswire made) and takes over. A network whose own configuration
// changed takes the new one the same way once it has no live attachment;
// with live ones it may only add subnets or change flags.
//
// Each network that made an attachment is recorded in nswire's nftables
// table with the subnets, bridge and settings it was wired with
// (firewall.Networks). Records never overlap, so an ADD that finds its own
// record as its configuration wants it (the usual case) reads nothing
// else: one netlink round. It holds the host's network lock shared until
// it ends, so no other ADD can judge its network dead while its veth is
// being made. Any other ADD takes the lock exclusively, which waits for
// the ADDs in flight, and settles the records. Live means a host end
// exists (link.AttachedPort): a container that died without DEL took its
// veth pair with its namespace, and a plugin killed at any instant leaves
// records and lock consistent (one transaction; the lock dies with it).

// owner is ADD's claim on its network's subnets, held until ADD ends.
type owner struct{ lock *firewall.NetworksLock }

// claim makes the network the owner of its subnets, once per ADD. The
// subnets come from the host-local style ipam section when there is one
// (before IPAM runs, res nil); otherwise from IPAM's answer, which only
// ever adds to what the network owns.
func (o *owner) claim(n *config.Net, cfg *ipam.Config, res *current.Result) error {
	if o.lock != nil {
		return nil
	}
	subnets, grow := cfg.Subnets(), false
	if len(subnets) == 0 {
		if res == nil {
			return nil
		}
		subnets, grow = resultSubnets(res), true
	}
	want := fwNetwork(n, nil)
	want.Subnets = subnets
	l, err := claim(want, grow)
	o.lock = l
	return err
}

func (o *owner) release() {
	o.lock.Release()
	o.lock = nil
}

func resultSubnets(res *current.Result) []*net.IPNet {
	var out []*net.IPNet
	for _, ipc := range res.IPs {
		out = append(out, &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask})
	}
	return out
}

// claim returns the lock held shared, once the records show want. When
// they do not, it settles them under the exclusive lock and reads again:
// the exclusive hold is never kept while an ADD wires, so the first ADDs of
// a new network do not queue behind each other.
func claim(want firewall.Network, grow bool) (*firewall.NetworksLock, error) {
	fw, err := openFirewall()
	if err != nil {
		return nil, err
	}
	defer fw.Close()
	for range 3 {
		l, err := firewall.LockNetworks(false)
		if err != nil {
			return nil, err
		}
		recs, err := fw.Networks()
		if err == nil {
			if own := firewall.FindNetwork(recs, want.Name); own != nil && covers(*own, want, grow) {
				return l, nil
			}
		}
		l.Release()
		if err != nil {
			return nil, err
		}
		if l, err = firewall.LockNetworks(true); err != nil {
			return nil, err
		}
		err = settle(fw, want, grow)
		l.Release()
		if err != nil {
			return nil, err
		}
	}
	return nil, types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("network %q: other ADDs keep changing which network owns its subnets; retry", want.Name), "")
}

// settle records want, after refusing it or releasing the dead networks
// in its way. The caller holds the lock exclusively.
func settle(fw *firewall.Firewall, want firewall.Network, grow bool) error {
	recs, err := fw.Networks()
	if err != nil {
		return err
	}
	own := firewall.FindNetwork(recs, want.Name)
	if own != nil && grow {
		want.Subnets = firewall.MergeSubnets(own.Subnets, want.Subnets)
	}
	var keep, dead []firewall.Network
	for _, r := range recs {
		if r.Name == want.Name {
			continue
		}
		what := firewall.Conflict(r, want)
		if what == "" {
			keep = append(keep, r)
			continue
		}
		port, err := link.AttachedPort(r.Name, r.Bridge)
		if err != nil {
			return err
		}
		if port != "" {
			return refuseTaken(want, r, what, port)
		}
		dead = append(dead, r)
	}
	if own != nil && !sameNetwork(*own, want) {
		port, err := link.AttachedPort(own.Name, own.Bridge)
		if err != nil {
			return err
		}
		if change := breakingChange(*own, want); port != "" && change != "" {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
				"network %q changed %s while it has containers on this host (host interface %s): remove them, or restore its previous configuration, and retry",
				want.Name, change, port), "")
		}
		if port == "" {
			dead = append(dead, *own)
		} else if err := fw.DropNoMasquerade(*own, removed(own.NoMasquerade, want.NoMasquerade)); err != nil {
			return err
		}
	}
	if own == nil {
		if err := releaseUnrecorded(want); err != nil {
			return err
		}
	}
	for _, r := range dead {
		if err := release(fw, r, want); err != nil {
			return err
		}
	}
	return fw.SetNetworks(append(keep, want))
}

// releaseUnrecorded clears want's bridge, when nswire made it and it has
// no port, of addresses overlapping want's subnets: without a record (a
// flushed table), it may still hold an earlier configuration's gateway.
func releaseUnrecorded(want firewall.Network) error {
	if want.Bridge == "" {
		return nil
	}
	port, err := link.AttachedPort(want.Name, want.Bridge)
	if err != nil || port != "" {
		return err
	}
	return link.ClearOwnBridge(want.Bridge, want.Subnets)
}

// release removes what dead network r left in want's way.
func release(fw *firewall.Firewall, r, want firewall.Network) error {
	if err := fw.ReleaseNetwork(r); err != nil {
		return fmt.Errorf("release network %q: %w", r.Name, err)
	}
	if r.Bridge == "" {
		return nil
	}
	if err := link.ReleaseBridge(r.Bridge, r.Subnets, r.Bridge == want.Bridge); err != nil {
		return fmt.Errorf("release network %q: %w", r.Name, err)
	}
	return nil
}

func refuseTaken(want, r firewall.Network, what, port string) error {
	msg := fmt.Sprintf("network %q: %s of network %q, which has containers on this host (host interface %s): give %q a subnet that overlaps no other network's, or remove %q's containers first",
		want.Name, what, r.Name, port, want.Name, r.Name)
	if strings.HasPrefix(what, "bridge") {
		msg = fmt.Sprintf("network %q: %s belongs to network %q, which has containers on this host (port %s): give each network its own bridge",
			want.Name, what, r.Name, port)
	}
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}

// breakingChange describes a change of own's configuration that live
// attachments cannot follow: a new bridge or mode, a subnet gone.
func breakingChange(own, want firewall.Network) string {
	if own.Bridge != want.Bridge {
		return fmt.Sprintf("its bridge from %s to %s", bridgeName(own.Bridge), bridgeName(want.Bridge))
	}
	if len(removed(own.Subnets, want.Subnets)) > 0 {
		return fmt.Sprintf("its subnets from %s to %s", joinNets(own.Subnets), joinNets(want.Subnets))
	}
	return ""
}

// removed lists the prefixes of was that now does not hold.
func removed(was, now []*net.IPNet) []*net.IPNet {
	var out []*net.IPNet
	for _, n := range was {
		if !firewall.HasSubnet(now, n) {
			out = append(out, n)
		}
	}
	return out
}

func bridgeName(b string) string {
	if b == "" {
		return "routed mode"
	}
	return fmt.Sprintf("%q", b)
}

// covers reports whether the record own already is want: with grow,
// want's subnets need only be among own's.
func covers(own, want firewall.Network, grow bool) bool {
	if grow {
		want.Subnets = firewall.MergeSubnets(own.Subnets, want.Subnets)
	}
	return sameNetwork(own, want)
}

func sameNetwork(a, b firewall.Network) bool {
	return a.Bridge == b.Bridge && a.IPMasq == b.IPMasq && a.Isolation == b.Isolation &&
		a.ICC == b.ICC && a.Internal == b.Internal &&
		sameNets(a.Subnets, b.Subnets) && sameNets(a.NoMasquerade, b.NoMasquerade)
}

func sameNets(a, b []*net.IPNet) bool {
	return len(a) == len(b) && len(removed(a, b)) == 0
}

func joinNets(nets []*net.IPNet) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	return strings.Join(s, ",")
}
