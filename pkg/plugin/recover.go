package plugin

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ipam"
)

// restoreReservations rebuilds nswire-ipam's store of a network when it has
// no index, which may mean an admin removed the directory while containers
// of the network live; otherwise the next ADD would hand out an address a
// running container holds. Each live attachment's anti-spoofing record
// chain holds its addresses. The cost per ADD is one stat: only ADD makes a
// store, so chains are listed only on a network's first ADD or after the
// directory was removed, not whenever its store is empty.
func restoreReservations(n *config.Net, args *skel.CmdArgs) error {
	cfg, err := ipam.ParseConfig(args.StdinData, args.Args)
	if err != nil {
		return nil // the IPAM ADD reports it with its own code
	}
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
		return types.NewError(types.ErrTryAgainLater, "ipam store lost and firewall unreadable", err.Error())
	}
	stdin, err := withoutRequests(args.StdinData)
	if err != nil {
		return err
	}
	for owner, ips := range owned {
		if err := reReserve(owner, ips, stdin); err != nil {
			return err
		}
	}
	return nil
}

// reReserve gives an attachment back its addresses as a static request.
func reReserve(owner string, ips []net.IP, stdin []byte) error {
	_, rest, _ := strings.Cut(owner, "/")
	cid, ifName, ok := strings.Cut(rest, "/")
	if !ok || len(ips) == 0 {
		return nil
	}
	addrs := make([]string, len(ips))
	for i, ip := range ips {
		addrs[i] = ip.String()
	}
	req := ipam.Request{ContainerID: cid, IfName: ifName, Args: "IP=" + strings.Join(addrs, ","), StdinData: stdin}
	if _, err := ipam.Add(req); err != nil {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("ipam store was lost; restoring %s of %s failed", strings.Join(addrs, ","), owner), err.Error())
	}
	return nil
}

// withoutRequests drops the static-address requests of the current call
// from the config, so a restore asks for exactly the recorded addresses.
func withoutRequests(stdin []byte) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(stdin, &m); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not valid JSON", err.Error())
	}
	delete(m, "runtimeConfig")
	delete(m, "args")
	return json.Marshal(m)
}
