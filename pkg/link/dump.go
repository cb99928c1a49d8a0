package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpAttempts bounds retries of a netlink dump that the kernel flagged as
// interrupted (NLM_F_DUMP_INTR): under concurrent ADDs the address and
// link tables change mid-dump, and a partial answer would be wrong.
const dumpAttempts = 10

// RetryDump runs dump again, up to dumpAttempts times, while the kernel
// flags its answer as interrupted.
func RetryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var r []T
		if r, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return r, err
		}
	}
	return nil, err
}

// AddrList lists the addresses of l; h nil means the caller's namespace,
// where the kernel filters the dump by interface.
func AddrList(h *netlink.Handle, l netlink.Link) ([]netlink.Addr, error) {
	if h == nil {
		return hostAddrs(l.Attrs().Index)
	}
	return RetryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
}

// LinkList lists every link in h's namespace.
func LinkList(h *netlink.Handle) ([]netlink.Link, error) {
	return RetryDump(handle(h).LinkList)
}

// RouteList lists the routes through l.
func RouteList(h *netlink.Handle, l netlink.Link) ([]netlink.Route, error) {
	return RetryDump(func() ([]netlink.Route, error) { return handle(h).RouteList(l, netlink.FAMILY_ALL) })
}

func handle(h *netlink.Handle) *netlink.Handle {
	if h == nil {
		return hostHandle
	}
	return h
}

// hostAddrs dumps the addresses of one host interface with the kernel doing
// the filtering (NETLINK_GET_STRICT_CHK and ifa_index): a plain RTM_GETADDR
// dump returns every address of the host, which in routed mode grows by
// the gateway addresses of every host veth. It is built by hand because
// netlink's AddrList puts no ifindex in its request (it filters the whole
// dump itself), so even Handle.SetStrictCheck leaves the kernel sending all.
func hostAddrs(index int) ([]netlink.Addr, error) {
	s, err := nl.GetNetlinkSocketAt(vns.None(), vns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		return nil, fmt.Errorf("netlink strict check: %w", err)
	}
	return RetryDump(func() ([]netlink.Addr, error) {
		req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
		msg := nl.NewIfAddrmsg(unix.AF_UNSPEC)
		msg.Index = uint32(index)
		req.AddData(msg)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
		if err != nil {
			return nil, err
		}
		return parseAddrs(msgs, index)
	})
}

func parseAddrs(msgs [][]byte, index int) ([]netlink.Addr, error) {
	var out []netlink.Addr
	for _, m := range msgs {
		ifa := nl.DeserializeIfAddrmsg(m)
		if int(ifa.Index) != index {
			continue // a kernel without strict filtering sends everything
		}
		attrs, err := nl.ParseRouteAttr(m[ifa.Len():])
		if err != nil {
			return nil, err
		}
		bits := 32
		want := uint16(unix.IFA_LOCAL)
		if ifa.Family == unix.AF_INET6 {
			bits, want = 128, unix.IFA_ADDRESS
		}
		for _, a := range attrs {
			if a.Attr.Type == want {
				ip := net.IP(append([]byte(nil), a.Value...))
				out = append(out, netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(int(ifa.Prefixlen), bits)}, LinkIndex: index})
			}
		}
	}
	return out, nil
}
