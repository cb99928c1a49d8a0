// Package plugin holds nswire's verb handlers, callable in-process (tests,
// profiling) and from the plugin binary through skel.
package plugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/netns"
	"github.com/nswire/nswire/pkg/shaping"
)

// Funcs is the skel dispatch table of the nswire binary.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}
}

// Add wires one container: IPAM, bridge, veth, container side, and prints
// the result. Any failure undoes what this call made.
func Add(args *skel.CmdArgs) (err error) {
	t, n, err := start("ADD", args, loadAll)
	var undo rollback
	defer func() {
		var undoErrs []error
		if err != nil {
			undoErrs = undo.run()
		}
		err = t.finish(err, undoErrs)
	}()
	if err != nil {
		return err
	}
	if err := checkIdentity(n, args); err != nil {
		return err
	}
	cns, err := netns.Open(args.Netns)
	if err != nil {
		return err
	}
	defer cns.Close()
	if err := refuseExisting(cns, args.IfName); err != nil {
		return err
	}
	t.step("netns")
	im := newIPAM(n, args)
	var own owner
	defer own.release()
	res, err := address(n, &im, &own, &undo, t)
	if err != nil {
		return err
	}
	p, err := newPlan(n, args, res)
	if err != nil {
		return err
	}
	if err := wire(n, args, cns, p, res, &undo, t); err != nil {
		return err
	}
	if err := protect(n, args, p, res, &undo, intentDir(n, im.cfg, args.StdinData)); err != nil {
		return err
	}
	t.step("firewall")
	return types.PrintResult(res, n.CNIVersion)
}

// address makes the network the owner of its subnets on this host and
// reserves the container's addresses. The claim comes before IPAM when the
// ipam section names the subnets, after IPAM's answer otherwise.
func address(n *config.Net, im *ipamClient, own *owner, undo *rollback, t *trace) (*current.Result, error) {
	if err := im.parse(); err != nil {
		return nil, err
	}
	if err := own.claim(n, im.cfg, nil); err != nil {
		return nil, err
	}
	t.step("owner")
	if im.builtin() {
		if err := restoreReservations(n, im.cfg); err != nil {
			return nil, err
		}
	}
	res, err := im.add()
	if err != nil {
		return nil, err
	}
	undo.push(im.del)
	t.step("ipam")
	return res, own.claim(n, im.cfg, res)
}

// wire makes the kernel objects of the plan and fills res.Interfaces.
func wire(n *config.Net, args *skel.CmdArgs, cns *netns.NS, p *plan, res *current.Result, undo *rollback, t *trace) error {
	if err := link.EnableForwarding(p.v4, p.v6); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	var br *netlink.Bridge
	if n.Bridged() {
		var created bool
		var err error
		br, created, err = link.EnsureBridge(link.BridgeSpec{Name: n.Bridge, MTU: p.mtu, Gateways: p.bridgeGWs})
		if created {
			undo.push(func() error { return link.DeleteBridgeIfUnused(n.Bridge) })
		}
		if err != nil {
			return err
		}
		t.step("bridge")
	}
	host, err := createVeth(n, args, cns, p, br)
	if err != nil {
		return err
	}
	undo.push(func() error { return link.DeleteOwned(p.hostName, p.alias) })
	t.step("veth")
	if !n.Bridged() {
		if err := link.ConfigureRoutedHost(host, p.hostGWs, p.addrs); err != nil {
			return err
		}
	} else if n.Hairpin() {
		if err := netlink.LinkSetHairpin(host, true); err != nil {
			return fmt.Errorf("hairpin on %q: %w", p.hostName, err)
		}
	}
	cl, routes, err := link.ConfigureContainer(cns, link.ContainerSpec{IfName: args.IfName, Addrs: p.addrs, Routes: p.routes, OnLink: p.onLink})
	if err != nil {
		return err
	}
	res.Routes = routes
	t.step("container")
	res.Interfaces, res.DNS = interfaces(br, host, cl, cns.Path), dns(n, res.DNS)
	setInterfaceIndex(res)
	return nil
}

// protect installs the attachment's firewall elements (masquerade,
// published ports, isolation, anti-spoofing) and its bandwidth shaping,
// and records them in its intent file (pkg/intent) for nswire-restore.
func protect(n *config.Net, args *skel.CmdArgs, p *plan, res *current.Result, undo *rollback, intents string) error {
	a := fwAttachment(n, args.ContainerID, args.IfName, p.hostName, res)
	fw, err := openFirewall()
	if err != nil {
		return err
	}
	err = fw.Add(a)
	fw.Close()
	if err != nil {
		return err
	}
	undo.push(func() error { return delFirewall(a) })
	l := limits(n)
	if !l.IsZero() {
		if err := shaping.Apply(nil, p.hostName, l); err != nil {
			return err
		}
		undo.push(func() error { return shaping.Remove(nil, p.hostName) })
	}
	if err := intent.Save(intents, intent.Of(a, l)); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	undo.push(func() error { return intent.Remove(intents, attachment(n, args)) })
	return nil
}

func createVeth(n *config.Net, args *skel.CmdArgs, cns *netns.NS, p *plan, br *netlink.Bridge) (netlink.Link, error) {
	spec := link.VethSpec{
		HostName: p.hostName, Alias: p.alias, PeerName: args.IfName,
		PeerNetNSFd: cns.Fd(), PeerMAC: n.MAC, MTU: p.mtu,
	}
	if br != nil {
		spec.MasterIndex = br.Index
	}
	host, err := link.CreateVeth(spec)
	if errors.Is(err, unix.EXFULL) && br != nil {
		return nil, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("bridge %q already has the %d ports Linux allows: a container can join once another leaves, or use another network", n.Bridge, maxBridgePorts), err.Error())
	}
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return host, err
	}
	if err := refuseExisting(cns, args.IfName); err != nil {
		return nil, err
	}
	// The host end outlived an earlier attachment with this identity (the
	// runtime lost its DEL): it is ours, so replace it once.
	if err := link.DeleteOwned(p.hostName, p.alias); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("host interface %s exists and cannot be replaced", p.hostName), err.Error())
	}
	return link.CreateVeth(spec)
}

// maxBridgePorts is how many ports a Linux bridge takes (port numbers 1 to
// BR_MAX_PORTS-1); one more fails with EXFULL.
const maxBridgePorts = 1023

// refuseExisting fails when the container already has ifName, as the spec
// requires.
func refuseExisting(cns *netns.NS, ifName string) error {
	_, err := cns.Handle().LinkByName(ifName)
	if err == nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q already exists in %s", ifName, cns.Path), "")
	}
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	return fmt.Errorf("look up %q in container: %w", ifName, err)
}
