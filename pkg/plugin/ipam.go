package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ipam"
)

// builtinIPAM is the ipam.type served in-process, without an exec.
const builtinIPAM = "nswire-ipam"

// ipamClient is the IPAM of one invocation: nswire's own in-process, or the
// delegate named by ipam.type, found in CNI_PATH and given the same env
// and config.
type ipamClient struct {
	typ   string
	stdin []byte
	req   ipam.Request
	cfg   *ipam.Config // nswire-ipam's configuration when ADD parsed it
}

func newIPAM(n *config.Net, args *skel.CmdArgs) ipamClient {
	return ipamClient{typ: n.IPAM.Type, stdin: args.StdinData, req: ipam.Request{
		ContainerID: args.ContainerID, IfName: args.IfName, Args: args.Args, StdinData: args.StdinData,
	}}
}

func (c ipamClient) builtin() bool { return c.typ == builtinIPAM }

// parse reads the ipam section once per ADD, in host-local's format, which
// nswire-ipam and host-local share: nswire-ipam allocates from it, a lost
// store is restored from it, and it names the subnets the network owns.
// For nswire-ipam a bad section fails the ADD; a delegate reports its own
// errors (it may read another format), and the network's subnets are then
// learnt from its answer.
func (c *ipamClient) parse() error {
	cfg, err := ipam.ParseConfig(c.stdin, c.req.Args)
	if err != nil && c.builtin() {
		return ipamError("ADD", c.typ, err)
	}
	c.cfg = cfg
	return nil
}

func (c ipamClient) add() (*current.Result, error) {
	if c.builtin() {
		res, err := ipam.Allocate(c.cfg, c.req)
		return res, ipamError("ADD", c.typ, err)
	}
	out, err := execDelegate("ADD", c.typ, c.stdin)
	if err != nil {
		return nil, ipamError("ADD", c.typ, err)
	}
	r, err := create.CreateFromBytes(out)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("ipam %q returned an unreadable result", c.typ), err.Error())
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
	if c.builtin() {
		return ipamError("DEL", c.typ, ipam.Del(c.req))
	}
	return ipamError("DEL", c.typ, c.run("DEL"))
}

func (c ipamClient) check() error {
	if c.builtin() {
		return ipamError("CHECK", c.typ, ipam.Check(c.req))
	}
	return ipamError("CHECK", c.typ, c.run("CHECK"))
}

func (c ipamClient) gc() error {
	if c.builtin() {
		return ipamError("GC", c.typ, ipam.GC(c.req))
	}
	return ipamError("GC", c.typ, c.run("GC"))
}

func (c ipamClient) status() error {
	if c.builtin() {
		return ipamError("STATUS", c.typ, ipam.Status(c.req))
	}
	return ipamError("STATUS", c.typ, c.run("STATUS"))
}

func (c ipamClient) run(verb string) error {
	_, err := execDelegate(verb, c.typ, c.stdin)
	return err
}

// ipamError keeps a delegate's CNI error code and names the plugin.
func ipamError(verb, typ string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*types.Error); ok {
		return types.NewError(e.Code, fmt.Sprintf("ipam %q %s: %s", typ, verb, e.Msg), e.Details)
	}
	// Untyped: the verb's boundary classifies it (errors.go).
	return fmt.Errorf("ipam %q %s: %w", typ, verb, err)
}
