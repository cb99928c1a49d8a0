package link

import (
	"errors"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Deletion is a link removal the kernel is still finishing.
//
// Unregistering a netdev takes two phases: under RTNL the kernel unlists the
// device (and a veth's peer), closes it, detaches it from its bridge and
// announces RTM_DELLINK; after releasing RTNL it waits in rcu_barrier()
// for a full RCU grace period before the RTM_DELLINK request returns. That
// wait is 15-20 ms on a small VM, most of a DEL. Once the announcement is
// out, the addresses are unreachable, so a caller may release what hung on
// the link (firewall elements, the IPAM reservation) while the kernel waits.
type Deletion struct {
	done   chan struct{}
	result error
}

// Wait blocks until the kernel finished the removal and reports its
// outcome.
func (d *Deletion) Wait() error {
	<-d.done
	return d.result
}

// finished is a Deletion with nothing left to wait for.
func finished(err error) *Deletion {
	d := &Deletion{done: make(chan struct{}), result: err}
	close(d.done)
	return d
}

// StartDelete removes l and returns once the kernel has unlisted it (or the
// request ended, whichever is first). Without a notification socket it
// degrades to a plain synchronous delete.
//
// Sockets are opened on the calling thread, so the removal acts in the
// caller's namespace even though it completes on another thread.
func StartDelete(l netlink.Link) *Deletion {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return finished(err)
	}
	d := &Deletion{done: make(chan struct{})}
	unlisted := watchUnlist(l.Attrs().Index)
	go func() {
		defer h.Close()
		d.result = h.LinkDel(l)
		if errors.Is(d.result, unix.ENODEV) {
			d.result = nil // gone already: DEL converges
		}
		close(d.done)
	}()
	select {
	case <-unlisted:
	case <-d.done:
	}
	return d
}

// unlistWatchLimit bounds how long a watcher stays around when the
// announcement never comes (the delete failed, or notifications were
// dropped): the caller then just waits for the request itself.
const unlistWatchLimit = time.Second

// watchUnlist returns a channel closed when the kernel announces that the
// link with ifindex index left the namespace. It subscribes before the
// caller deletes, so the announcement cannot be missed; on any failure the
// channel never closes.
func watchUnlist(index int) <-chan struct{} {
	seen := make(chan struct{})
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return seen
	}
	tv := unix.NsecToTimeval(unlistWatchLimit.Nanoseconds())
	if err := s.SetReceiveTimeout(&tv); err != nil {
		s.Close()
		return seen
	}
	go func() {
		// The socket is closed here, never under a blocked Receive.
		defer s.Close()
		for {
			msgs, _, err := s.Receive()
			if err != nil {
				return
			}
			for _, m := range msgs {
				if isUnlist(m, index) {
					close(seen)
					return
				}
			}
		}
	}()
	return seen
}

// isUnlist matches the device's own RTM_DELLINK; the bridge also sends one
// (family AF_BRIDGE) when the port leaves it, which is not the same event.
func isUnlist(m syscall.NetlinkMessage, index int) bool {
	if m.Header.Type != unix.RTM_DELLINK || len(m.Data) < unix.SizeofIfInfomsg {
		return false
	}
	ifi := nl.DeserializeIfInfomsg(m.Data)
	return ifi.Family == unix.AF_UNSPEC && int(ifi.Index) == index
}
