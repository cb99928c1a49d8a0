package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"
	"unsafe"

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
// wait is 12-20 ms on a small VM, most of a DEL. Once the announcement is
// out, the addresses are unreachable, so a caller may release what hung on
// the link (firewall elements, the IPAM reservation) while the kernel waits.
//
// The request is sent by a sender process that shares this one's memory
// (sender_amd64.s), so not even the plugin's exit waits for the grace
// period: a process ends only when all its threads have, and a thread
// blocked in rcu_barrier() cannot be interrupted. The sender keeps a copy
// of the descriptors open when it started (not stdin, stdout, stderr) until
// the kernel is done. Where it cannot be started, a goroutine sends the
// request and the process waits for it at exit.
type Deletion struct {
	done     chan struct{}
	result   error
	unlisted bool // the kernel announced the removal
	sender   int  // pid of the sender process carrying the request, or 0
}

// Wait reports the outcome of the removal: as soon as it is known to have
// succeeded (announced, with the rest left to the sender), else once the
// request ended.
func (d *Deletion) Wait() error {
	if d.unlisted && d.sender != 0 {
		return nil
	}
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
// The socket is opened on the calling thread, so the removal acts in the
// caller's namespace even though it completes elsewhere.
func StartDelete(l netlink.Link) *Deletion {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return finished(fmt.Errorf("netlink socket: %w", err))
	}
	index := l.Attrs().Index
	unlisted := watchUnlist(index)
	d := &Deletion{done: make(chan struct{})}
	msg := delLinkRequest(index)
	if !useSender || !d.detach(fd, msg) {
		go func() {
			err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
			d.end(fd, err)
		}()
	}
	select {
	case <-unlisted:
		d.unlisted = true
	case <-d.done:
	}
	return d
}

func delLinkRequest(index int) []byte {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	m := nl.NewIfInfomsg(unix.AF_UNSPEC)
	m.Index = int32(index)
	req.AddData(m)
	return req.Serialize()
}

// useSender is false only in tests of the in-process path, which other
// architectures and a failed clone take.
var useSender = true

// sender is what a sender process reads: it must stay in the heap,
// referenced, until the process reported.
type sender struct {
	stack []byte
	msg   []byte
	res   int64
}

// detach starts a sender process for msg; false if none could start.
func (d *Deletion) detach(fd int, msg []byte) bool {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return false
	}
	if fd <= 2 || p[1] <= 2 {
		// The sender closes 0-2 first (a runtime that started us with
		// them closed would have had them reused).
		unix.Close(p[0])
		unix.Close(p[1])
		return false
	}
	s := &sender{stack: make([]byte, 4096), msg: msg}
	top := uintptr(unsafe.Pointer(&s.stack[len(s.stack)-64])) &^ 15
	pid, errno := cloneSend(top, int32(fd), int32(p[1]), unsafe.Pointer(&s.msg[0]), uintptr(len(s.msg)), &s.res)
	unix.Close(p[1])
	if errno != 0 {
		unix.Close(p[0])
		return false
	}
	d.sender = int(pid)
	go func() {
		var b [1]byte
		n, err := readRetrying(p[0], b[:])
		unix.Close(p[0])
		switch {
		case n == 0 && err == nil:
			err = errors.New("link delete: sender process died")
		case err == nil && s.res < 0:
			err = unix.Errno(-s.res)
		}
		// A sender exits at once after reporting; reap it here (a clone
		// child, hence __WALL) so a long-lived caller keeps no zombie.
		_, _ = unix.Wait4(d.sender, nil, unix.WALL, nil)
		runtime.KeepAlive(s)
		d.end(fd, err)
	}()
	return true
}

// end reads the kernel's answer to the delete request (unless sending it
// failed) and closes fd.
func (d *Deletion) end(fd int, sendErr error) {
	d.result = sendErr
	if sendErr == nil {
		d.result = readAck(fd)
	}
	unix.Close(fd)
	if errors.Is(d.result, unix.ENODEV) {
		d.result = nil // gone already: DEL converges
	}
	close(d.done)
}

// readRetrying is read(2), retried when a signal interrupts it.
func readRetrying(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// readAck returns the error of the NLMSG_ERROR answering the request.
func readAck(fd int) error {
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
		}
	}
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
