// Package netns is the only place that enters network namespaces or opens
// netlink handles bound to one. Everything else receives a *NS.
package netns

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is an open network namespace with a netlink handle bound to it.
type NS struct {
	Path   string
	ns     ns.NetNS
	handle *netlink.Handle
	route  *nl.SocketHandle // for requests the handle has no method for
}

// Open opens the namespace at path. A path that does not exist or is not a
// network namespace yields a CNI error naming it (code 4: bad environment).
func Open(path string) (*NS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		var notNS ns.NSPathNotNSErr
		var notExist ns.NSPathNotExistErr
		if errors.As(err, &notNS) || errors.As(err, &notExist) {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_NETNS %q is not a network namespace", path), err.Error())
		}
		return nil, fmt.Errorf("open netns %q: %w", path, err)
	}
	h, err := netlink.NewHandleAt(vns.NsHandle(n.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlink handle in %q: %w", path, err)
	}
	return &NS{Path: path, ns: n, handle: h}, nil
}

// Gone reports whether err means the namespace no longer exists, which
// DEL treats as success.
func Gone(err error) bool {
	var notExist ns.NSPathNotExistErr
	var tErr *types.Error
	return errors.As(err, &notExist) || (errors.As(err, &tErr) && tErr.Code == types.ErrInvalidEnvironmentVariables)
}

// Handle is a netlink handle that acts inside the namespace.
func (n *NS) Handle() *netlink.Handle { return n.handle }

// Route is a route netlink socket in the namespace, opened on first use,
// for requests built by hand (nl.NetlinkRequest.Sockets): unlike Do it
// needs no thread switched into the namespace.
func (n *NS) Route() (*nl.SocketHandle, error) {
	if n.route == nil {
		s, err := nl.GetNetlinkSocketAt(vns.NsHandle(n.ns.Fd()), vns.None(), unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("netlink socket in %q: %w", n.Path, err)
		}
		n.route = &nl.SocketHandle{Socket: s}
	}
	return n.route, nil
}

// Fd is the namespace file descriptor, for IFLA_NET_NS_FD.
func (n *NS) Fd() int { return int(n.ns.Fd()) }

// Do runs f on a thread switched into the namespace: for what netlink
// cannot reach, such as per-namespace /proc/sys files.
func (n *NS) Do(f func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return f() })
}

// Close releases the handle, the socket and the namespace file.
func (n *NS) Close() {
	if n.route != nil {
		n.route.Close()
	}
	n.handle.Close()
	n.ns.Close()
}
