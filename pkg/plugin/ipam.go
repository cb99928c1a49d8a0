package plugin

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nswire/nswire/pkg/config"
)

// ipamClient is the IPAM of one invocation: the delegate named by
// ipam.type, found in CNI_PATH and given the same env and config.
type ipamClient struct {
	typ   string
	stdin []byte
}

func newIPAM(n *config.Net, args *skel.CmdArgs) ipamClient {
	return ipamClient{typ: n.IPAM.Type, stdin: args.StdinData}
}

func (c ipamClient) add() (*current.Result, error) {
	r, err := invoke.DelegateAdd(context.TODO(), c.typ, c.stdin, nil)
	if err != nil {
		return nil, ipamError("ADD", c.typ, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("ipam %q returned an unreadable result", c.typ), err.Error())
	}
	if len(res.IPs) == 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam %q returned no address", c.typ), "")
	}
	return res, nil
}

func (c ipamClient) del() error {
	return ipamError("DEL", c.typ, invoke.DelegateDel(context.TODO(), c.typ, c.stdin, nil))
}

func (c ipamClient) check() error {
	return ipamError("CHECK", c.typ, invoke.DelegateCheck(context.TODO(), c.typ, c.stdin, nil))
}

func (c ipamClient) gc() error {
	return ipamError("GC", c.typ, invoke.DelegateGC(context.TODO(), c.typ, c.stdin, nil))
}

func (c ipamClient) status() error {
	return ipamError("STATUS", c.typ, invoke.DelegateStatus(context.TODO(), c.typ, c.stdin, nil))
}

// ipamError keeps a delegate's CNI error code and names the plugin; a
// missing plugin is a bad environment (CNI_PATH), not an internal error.
func ipamError(verb, typ string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*types.Error); ok {
		return types.NewError(e.Code, fmt.Sprintf("ipam %q %s: %s", typ, verb, e.Msg), e.Details)
	}
	return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("ipam %q %s: %v", typ, verb, err), "")
}
