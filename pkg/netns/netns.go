// Package netns is the only place that enters network namespaces or opens
// netlink handles bound to one. Everything else receives a *NS.
package netns

import (
	"errors"
	"fmt"
	"runtime"

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
	back   int // the namespace threads return to: the caller's
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
	// Opened once here, the way back spares every later switch a /proc
	// lookup (netlink's helpers open the thread's namespace each time).
	back, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("open own netns: %w", err)
	}
	s := &NS{Path: path, ns: n, back: back}
	err = s.Do(func() (err error) {
		s.handle, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		unix.Close(back)
		n.Close()
		return nil, fmt.Errorf("netlink handle in %q: %w", path, err)
	}
	return s, nil
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
		s, err := nl.GetNetlinkSocketAt(vns.NsHandle(n.ns.Fd()), vns.NsHandle(n.back), unix.NETLINK_ROUTE)
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
// cannot reach, such as per-namespace /proc/sys files. The thread then
// returns to its namespace and serves on; ns.Do lets it die instead, so
// the runtime exits one thread and clones another per call. Should the
// way back fail, the thread stays locked and ends with its goroutine, so
// nothing else ever runs in the wrong namespace.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %q: %w", n.Path, err)
			return
		}
		err := f()
		if serr := unix.Setns(n.back, unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("leave netns %q: %w", n.Path, serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// Close releases the handle, the socket and the namespace file.
func (n *NS) Close() {
	if n.route != nil {
		n.route.Close()
	}
	n.handle.Close()
	unix.Close(n.back)
	n.ns.Close()
}
