package link

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds retries of a netlink dump that the kernel flagged as
// interrupted (NLM_F_DUMP_INTR): under concurrent ADDs the address and
// link tables change mid-dump, and a partial answer would be wrong.
const dumpAttempts = 10

func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var r []T
		if r, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return r, err
		}
	}
	return nil, err
}

// AddrList lists the addresses of l; h nil means the caller's namespace.
func AddrList(h *netlink.Handle, l netlink.Link) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return handle(h).AddrList(l, netlink.FAMILY_ALL) })
}

// LinkList lists every link in h's namespace.
func LinkList(h *netlink.Handle) ([]netlink.Link, error) {
	return retryDump(handle(h).LinkList)
}

// RouteList lists the routes through l.
func RouteList(h *netlink.Handle, l netlink.Link) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) { return handle(h).RouteList(l, netlink.FAMILY_ALL) })
}

func handle(h *netlink.Handle) *netlink.Handle {
	if h == nil {
		return hostHandle
	}
	return h
}
