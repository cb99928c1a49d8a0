package plugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
)

// GC removes host veths of this network whose attachment is not in
// cni.dev/valid-attachments, then lets IPAM do the same. Links without
// nswire's marker, or of other networks, are never touched.
func GC(args *skel.CmdArgs) (err error) {
	t, n, err := start("GC", args, loadNetwork)
	defer func() { err = t.finish(err, nil) }()
	if err != nil {
		return err
	}
	valid := map[ident.Attachment]bool{}
	for _, a := range n.ValidAttachments {
		valid[ident.Attachment{Network: n.Name, ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	linkErr := gcLinks(n, valid)
	t.step("links")
	fwErr := gcFirewall(n)
	t.step("firewall")
	intentErr := pruneIntents(n, args.StdinData, valid)
	ipamErr := newIPAM(n, args).gc()
	t.step("ipam")
	return errors.Join(linkErr, fwErr, intentErr, ipamErr)
}

func gcLinks(n *config.Net, valid map[ident.Attachment]bool) error {
	links, err := link.LinkList(nil)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	return errors.Join(gcHalfMade(n, links, valid), gcMarked(n.Name, links, valid), gcOrphanIfbs(links))
}

// gcHalfMade removes host ends a killed ADD left before marking them:
// nswire's device group, no alias, on this network's bridge (GC is
// exclusive with this network's ADDs), not a valid attachment's name.
func gcHalfMade(n *config.Net, links []netlink.Link, valid map[ident.Attachment]bool) error {
	if !n.Bridged() {
		return nil
	}
	brIndex := 0
	for _, l := range links {
		if l.Attrs().Name == n.Bridge {
			brIndex = l.Attrs().Index
		}
	}
	validNames := map[string]bool{}
	for id := range valid {
		validNames[link.HostVethName(id)] = true
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if brIndex == 0 || a.MasterIndex != brIndex || a.Alias != "" || a.Group != link.OwnerGroup || validNames[a.Name] {
			continue
		}
		errs = append(errs, shaping.Remove(nil, a.Name))
		if err := link.StartDelete(l).Wait(); err != nil {
			errs = append(errs, fmt.Errorf("gc half-made %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// gcMarked removes this network's marked host ends whose attachment is not
// valid. Shaping goes first: while the veth exists, a GC killed midway is
// finished by the next one.
func gcMarked(network string, links []netlink.Link, valid map[ident.Attachment]bool) error {
	var errs []error
	for _, l := range links {
		id, ok := link.ParseAlias(l.Attrs().Alias)
		if !ok || id.Network != network || valid[id] {
			continue
		}
		errs = append(errs, shaping.Remove(nil, l.Attrs().Name))
		if err := link.DeleteOwned(l.Attrs().Name, l.Attrs().Alias); err != nil {
			errs = append(errs, fmt.Errorf("gc %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// gcOrphanIfbs removes ifbs whose veth is gone, whatever their network:
// they shape nothing (veth deleted by an admin, netns destroyed, an
// earlier GC killed).
func gcOrphanIfbs(links []netlink.Link) error {
	var errs []error
	for _, name := range shaping.OrphanIfbs(links) {
		if err := shaping.RemoveIfb(nil, name); err != nil {
			errs = append(errs, fmt.Errorf("gc orphan %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func gcFirewall(n *config.Net) error {
	fw, err := openFirewall()
	if err != nil {
		return err
	}
	defer fw.Close()
	return fw.GC(fwNetwork(n, nil), n.ValidAttachments)
}
