// Command nswire-ipam exposes pkg/ipam as a standalone CNI IPAM plugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nswire/nswire/pkg/ipam"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    func(args *skel.CmdArgs) error { return ipam.Del(request(args)) },
		Check:  func(args *skel.CmdArgs) error { return ipam.Check(request(args)) },
		GC:     func(args *skel.CmdArgs) error { return ipam.GC(request(args)) },
		Status: func(args *skel.CmdArgs) error { return ipam.Status(request(args)) },
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "nswire-ipam")
}

func request(args *skel.CmdArgs) ipam.Request {
	return ipam.Request{
		ContainerID: args.ContainerID,
		IfName:      args.IfName,
		Args:        args.Args,
		StdinData:   args.StdinData,
	}
}

// cmdAdd prints the result in the cniVersion the runtime asked for.
func cmdAdd(args *skel.CmdArgs) error {
	result, err := ipam.Add(request(args))
	if err != nil {
		return err
	}
	conf, err := (&version.ConfigDecoder{}).Decode(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode cniVersion", err.Error())
	}
	if err := types.PrintResult(result, conf); err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "convert result to "+conf, err.Error())
	}
	return nil
}
