package plugin

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/ipam"
)

// restoreReservations rebuilds nswire-ipam's store of a network when it has
// no index, which may mean an admin removed the directory while containers
// of the network live; otherwise the next ADD would hand out an address a
// running container holds. Each live attachment's anti-spoofing record
// chain holds its addresses. The cost per ADD is one stat: only ADD makes a
// store, so chains are listed only on a network's first ADD or after the
// directory was removed, not whenever its store is empty.
func restoreReservations(n *config.Net, cfg *ipam.Config) error {
	if cfg.Indexed() {
		return nil
	}
	fw, err := openFirewall()
	if err != nil {
		return err
	}
	owned, err := fw.Addresses(n.Name)
	fw.Close()
	if err != nil {
		return fmt.Errorf("ipam store lost, and reading the addresses of live attachments from the firewall failed: %w", err)
	}
	for id, ips := range owned {
		if err := reReserve(cfg, id, ips); err != nil {
			return err
		}
	}
	return nil
}

// reReserve gives an attachment back its addresses as a static request
// (and only them: the current call's requests are not the owner's).
func reReserve(cfg *ipam.Config, id ident.Attachment, ips []net.IP) error {
	if len(ips) == 0 {
		return nil
	}
	restore := *cfg
	restore.Requested = nil
	addrs := make([]string, len(ips))
	for i, ip := range ips {
		addrs[i] = ip.String()
		if a, ok := netip.AddrFromSlice(ip); ok {
			restore.Requested = append(restore.Requested, a.Unmap())
		}
	}
	if _, err := ipam.Allocate(&restore, ipam.Request{ContainerID: id.ContainerID, IfName: id.IfName}); err != nil {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("ipam store was lost; restoring %s of %s failed", strings.Join(addrs, ","), id), err.Error())
	}
	return nil
}
