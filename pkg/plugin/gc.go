package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
)

// GC removes host veths of this network whose attachment is not in
// cni.dev/valid-attachments, then lets IPAM do the same. Links without
// nswire's marker, or of other networks, are never touched.
func GC(args *skel.CmdArgs) (err error) {
	t, n, err := start("GC", args)
	defer func() { t.finish(err, nil) }()
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range n.ValidAttachments {
		valid[a.ContainerID+"/"+a.IfName] = true
	}
	linkErr := gcLinks(n, valid)
	t.step("links")
	fwErr := gcFirewall(n, configuredSubnets(args.StdinData))
	t.step("firewall")
	ipamErr := newIPAM(n, args).gc()
	t.step("ipam")
	return errors.Join(linkErr, fwErr, ipamErr)
}

func gcLinks(n *config.Net, valid map[string]bool) error {
	network := n.Name
	links, err := link.LinkList(nil)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	// A host end a killed ADD left before marking it: nswire's group, no
	// alias, on this network's bridge (GC excludes this network's ADDs),
	// and not the derived name of a valid attachment.
	brIndex := 0
	for _, l := range links {
		if n.Bridged() && l.Attrs().Name == n.Bridge {
			brIndex = l.Attrs().Index
		}
	}
	validNames := map[string]bool{}
	for _, a := range n.ValidAttachments {
		validNames[link.HostVethName(network, a.ContainerID, a.IfName)] = true
	}
	for _, l := range links {
		a := l.Attrs()
		if brIndex != 0 && a.MasterIndex == brIndex && a.Alias == "" && a.Group == link.OwnerGroup && !validNames[a.Name] {
			if err := shaping.Remove(nil, a.Name); err != nil {
				errs = append(errs, fmt.Errorf("gc shaping of %s: %w", a.Name, err))
			}
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("gc half-made %s: %w", a.Name, err))
			}
		}
	}
	for _, l := range links {
		net, cid, ifName, ok := link.ParseAlias(l.Attrs().Alias)
		if !ok || net != network || valid[cid+"/"+ifName] {
			continue
		}
		// Shaping first: while the marked veth exists, a GC killed
		// midway is finished by the next one.
		if err := shaping.Remove(nil, l.Attrs().Name); err != nil {
			errs = append(errs, fmt.Errorf("gc shaping of %s: %w", l.Attrs().Name, err))
		}
		if err := link.DeleteOwned(l.Attrs().Name, l.Attrs().Alias); err != nil {
			errs = append(errs, fmt.Errorf("gc %s: %w", l.Attrs().Name, err))
		}
	}
	// An ifb whose veth is gone shapes nothing, whatever its network
	// (veth deleted by an admin, its netns destroyed, an older GC killed).
	for _, name := range shaping.OrphanIfbs(nil, links) {
		if err := shaping.RemoveIfb(nil, name); err != nil {
			errs = append(errs, fmt.Errorf("gc orphan %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func gcFirewall(n *config.Net, subnets []*net.IPNet) error {
	fw, err := openFirewall()
	if err != nil {
		return err
	}
	defer fw.Close()
	fn := fwNetwork(n, nil)
	fn.Subnets = subnets
	return fw.GC(fn, n.ValidAttachments)
}

// configuredSubnets reads the subnets of a host-local style ipam section
// (ranges, or the legacy flat subnet), so GC can drop the network-level
// firewall elements once no attachment is left.
func configuredSubnets(stdin []byte) []*net.IPNet {
	var c struct {
		IPAM struct {
			Subnet string `json:"subnet"`
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
		} `json:"ipam"`
	}
	if json.Unmarshal(stdin, &c) != nil {
		return nil
	}
	raw := []string{c.IPAM.Subnet}
	for _, set := range c.IPAM.Ranges {
		for _, r := range set {
			raw = append(raw, r.Subnet)
		}
	}
	var out []*net.IPNet
	for _, s := range raw {
		if _, n, err := net.ParseCIDR(s); err == nil {
			out = append(out, n)
		}
	}
	return out
}
