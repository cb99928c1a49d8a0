package plugin

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/netns"
	"github.com/nswire/nswire/pkg/shaping"
)

// Check compares the kernel with the prevResult ADD returned: IPAM
// reservation, bridge, host end, container end, addresses and routes.
func Check(args *skel.CmdArgs) (err error) {
	t, n, err := start("CHECK", args, loadAll)
	defer func() { err = t.finish(err, nil) }()
	if err != nil {
		return err
	}
	if n.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "prevResult: required by CHECK", "")
	}
	res, err := current.NewResultFromResult(n.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult: cannot convert", err.Error())
	}
	if err := newIPAM(n, args).check(); err != nil {
		return err
	}
	t.step("ipam")
	// Code 100 only for a difference; a failure to look (a socket, a
	// permission) says nothing about the attachment and is classified
	// like any other error by finish.
	if err := checkKernel(n, args, res); err != nil {
		if isMismatch(err) {
			return types.NewError(ErrCheckFailed, err.Error(), "")
		}
		return err
	}
	t.step("kernel")
	return nil
}

func checkKernel(n *config.Net, args *skel.CmdArgs, res *current.Result) error {
	cns, err := netns.Open(args.Netns)
	if err != nil {
		return err
	}
	defer cns.Close()
	e, err := expectation(n, args, res)
	if err != nil {
		return err
	}
	hostName, alias := identity(n, args)
	master := 0
	var routed []*net.IPNet
	if n.Bridged() {
		br, err := link.CheckBridge(n.Bridge, bridgeGateways(res))
		if err != nil {
			return err
		}
		master = br.Index
	} else {
		routed = e.Addrs
	}
	if err := link.CheckHostEnd(hostName, alias, master, routed); err != nil {
		return err
	}
	if err := link.CheckContainer(cns, e); err != nil {
		return err
	}
	return checkFirewall(fwAttachment(n, args.ContainerID, args.IfName, hostName, res), limits(n))
}

func checkFirewall(a *firewall.Attachment, l shaping.Limits) error {
	fw, err := openFirewall()
	if err != nil {
		return err
	}
	defer fw.Close()
	if err := fw.Check(a); err != nil {
		return err
	}
	return shaping.Check(nil, a.HostIf, l)
}

// expectation reads the container end's expected state from the result.
func expectation(n *config.Net, args *skel.CmdArgs, res *current.Result) (link.Expect, error) {
	e := link.Expect{IfName: args.IfName, MTU: n.MTU, Routes: res.Routes}
	idx, ifc := sandboxInterface(res, args.IfName)
	if ifc == nil {
		return e, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("prevResult: no interface %q with a sandbox (CNI_IFNAME)", args.IfName), "")
	}
	e.MAC = ifc.Mac
	if ifc.Mtu != 0 {
		e.MTU = ifc.Mtu
	}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface == idx {
			addr := ipc.Address
			if !n.Bridged() {
				addr.Mask = fullMask(addr.IP.To4() != nil)
			}
			e.Addrs = append(e.Addrs, &addr)
		}
	}
	return e, nil
}

func bridgeGateways(res *current.Result) []*net.IPNet {
	var gws []*net.IPNet
	for _, ipc := range res.IPs {
		if ipc.Gateway != nil {
			gws = append(gws, gatewayNet(ipc))
		}
	}
	return gws
}
