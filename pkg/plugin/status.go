package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/nswire/nswire/pkg/config"
)

// Status reports 50 unless the config is valid and IPAM is ready.
func Status(args *skel.CmdArgs) error {
	n, err := config.LoadNetwork(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "invalid network config", err.Error())
	}
	if err := newIPAM(n, args).status(); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("ipam %q not ready", n.IPAM.Type), err.Error())
	}
	return nil
}
