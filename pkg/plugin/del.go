package plugin

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
)

// Del removes every host-side trace of the attachment. It needs neither the
// netns nor a prevResult: names derive from the identity. Each step runs
// whatever the others did; only real failures are reported.
func Del(args *skel.CmdArgs) (err error) {
	t, n, err := start("DEL", args, loadNetwork)
	defer func() { err = t.finish(err, nil) }()
	if err != nil {
		return err
	}
	hostName, alias := identity(n, args)
	// The host end goes first so the address is unreachable before IPAM
	// may hand it out again. The kernel's RCU wait that ends a link
	// removal overlaps the rest of DEL.
	veth, linkErr := link.StartDeleteOwned(hostName, alias)
	if errors.Is(linkErr, link.ErrNotOwned) {
		// Somebody else's link holds the name, so ours does not exist:
		// nothing of this attachment to remove, and DEL must converge.
		linkErr = nil
	}
	t.step("veth")
	shaped := make(chan error, 1)
	go func() { shaped <- shaping.Remove(nil, hostName) }()
	fwErr := delFirewall(fwAttachment(n, args.ContainerID, args.IfName, hostName, nil))
	t.step("firewall")
	// After the firewall: nswire-restore never finds an intent whose
	// elements are gone while its veth still stands.
	intentErr := removeIntent(n, args)
	ipamErr := newIPAM(n, args).del()
	t.step("ipam")
	shapeErr := <-shaped
	linkErr = errors.Join(linkErr, veth.Wait())
	t.step("unregister")
	return errors.Join(linkErr, fwErr, intentErr, shapeErr, ipamErr)
}
