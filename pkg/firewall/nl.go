package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The netlink transport of the hot path.
//
// The kernel handles a netfilter netlink request synchronously, inside the
// sendmsg that carries it: when sendmsg returns, every reply is queued on
// the socket. The transport exploits it:
//
//   - Independent GETs are pipelined: one sendmsg carries them all, one
//     recvmsg reads each reply (at most one dump per round, which takes a
//     second recvmsg for its NLMSG_DONE).
//   - A transaction (batch) asks for a single acknowledgement, on its last
//     message: the kernel still reports every failing message, and the
//     commit error, before that ack. google/nftables acknowledges every
//     message, which costs two recvmsg per message.
//   - Replies are read into one reusable buffer, without the MSG_PEEK
//     recvmsg that sizes each read in mdlayher/netlink.
//
// The messages of a transaction are built in txn.go; the tables' own
// objects (layout.go, skeleton.go) go through google/nftables.

// nlConn is a NETLINK_NETFILTER socket read and written directly.
type nlConn struct {
	c   *netlink.Conn
	rc  syscall.RawConn
	buf []byte
	seq uint32
}

// nlMsg is one received netlink message; data excludes the header.
type nlMsg struct {
	typ   uint16
	flags uint16
	seq   uint32
	data  []byte
}

// request is one request of a pipelined round and what came back for it.
type request struct {
	typ   uint16 // NFT_MSG_*
	fam   nftables.TableFamily
	dump  bool
	attrs []netlink.Attribute

	seq  uint32
	done bool
	intr bool    // a reply of the dump carried NLM_F_DUMP_INTR
	msgs []nlMsg // data replies (owned copies)
	err  error   // errno of an NLMSG_ERROR or NLMSG_DONE reply
}

var seqBase atomic.Uint32

func dialNL(fd int) (*nlConn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	// Different processes share nothing: seq only has to be unique on the
	// socket. Start away from 0 to ignore nothing by accident.
	s := (uint32(time.Now().UnixNano()) + seqBase.Add(1<<20)) >> 2
	return &nlConn{c: c, rc: rc, buf: make([]byte, 64<<10), seq: s}, nil
}

func (n *nlConn) close() { n.c.Close() }

func (n *nlConn) nextSeq() uint32 {
	n.seq++
	if n.seq >= 1<<31 {
		n.seq = 1 // never wraps inside a batch's seq window
	}
	return n.seq
}

// appendMsg appends one netlink message (header, data, padding) to b.
func appendMsg(b []byte, typ, flags uint16, seq uint32, data []byte) []byte {
	l := unix.NLMSG_HDRLEN + len(data)
	b = binary.NativeEndian.AppendUint32(b, uint32(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, data...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// replyWait bounds every wait for a reply. The kernel answers a request
// inside the sendmsg that carries it, so a reply that has not come within
// it never will; an error beats a plugin hung forever.
const replyWait = 30 * time.Second

func (n *nlConn) send(b []byte) error {
	if err := n.c.SetReadDeadline(time.Now().Add(replyWait)); err != nil {
		return err
	}
	var werr error
	err := n.rc.Write(func(fd uintptr) bool {
		for {
			_, werr = unix.Write(int(fd), b)
			if werr != unix.EINTR {
				return werr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("netlink send: %w", werr)
	}
	return nil
}

var errWouldBlock = errors.New("no reply queued")

// recv reads one datagram and calls fn for each message in it. With
// nonblock it returns errWouldBlock when nothing is queued.
func (n *nlConn) recv(nonblock bool, fn func(nlMsg)) error {
	var cnt int
	var rerr error
	read := func(fd uintptr) bool {
		for {
			cnt, _, rerr = unix.Recvfrom(int(fd), n.buf, unix.MSG_TRUNC)
			if rerr != unix.EINTR {
				return nonblock || rerr != unix.EAGAIN
			}
		}
	}
	if err := n.rc.Read(read); err != nil {
		return err
	}
	if rerr == unix.EAGAIN {
		return errWouldBlock
	}
	if rerr != nil {
		return fmt.Errorf("netlink receive: %w", rerr)
	}
	if cnt > len(n.buf) {
		// A datagram larger than the buffer (MSG_TRUNC reports its real
		// size): not something nftables sends for our requests.
		n.buf = make([]byte, cnt)
		return fmt.Errorf("netlink receive: %d-byte datagram truncated", cnt)
	}
	b := n.buf[:cnt]
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return fmt.Errorf("netlink receive: malformed message")
		}
		fn(nlMsg{
			typ:   binary.NativeEndian.Uint16(b[4:]),
			flags: binary.NativeEndian.Uint16(b[6:]),
			seq:   binary.NativeEndian.Uint32(b[8:]),
			data:  b[unix.NLMSG_HDRLEN:l],
		})
		al := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if al > len(b) {
			break
		}
		b = b[al:]
	}
	return nil
}

// errnoOf decodes the errno of an NLMSG_ERROR or NLMSG_DONE payload.
func errnoOf(data []byte) error {
	if len(data) < 4 {
		return nil
	}
	if e := int32(binary.NativeEndian.Uint32(data)); e < 0 {
		return unix.Errno(-e)
	}
	return nil
}

// dumpAttempts bounds the rounds re-sent because the kernel flagged a
// dump inconsistent: the ruleset changed while it was read.
const dumpAttempts = 10

// ErrDumpInterrupted means a listing was inconsistent every time it was
// read (NLM_F_DUMP_INTR): other processes kept changing the tables.
var ErrDumpInterrupted = errors.New("nftables listing interrupted by concurrent changes")

// exchange sends reqs in one sendmsg and reads until each is answered. At
// most one request may be a dump (a second one would get EBUSY while the
// first is still running). A round with an interrupted dump is sent again:
// its requests are all reads.
func (n *nlConn) exchange(reqs ...*request) error {
	for range dumpAttempts {
		if err := n.exchangeOnce(reqs); err != nil {
			return err
		}
		if !slices.ContainsFunc(reqs, func(r *request) bool { return r.intr }) {
			return nil
		}
	}
	return ErrDumpInterrupted
}

func (n *nlConn) exchangeOnce(reqs []*request) error {
	var b []byte
	bySeq := make(map[uint32]*request, len(reqs))
	for _, r := range reqs {
		data, err := netlink.MarshalAttributes(r.attrs)
		if err != nil {
			return err
		}
		flags := uint16(unix.NLM_F_REQUEST)
		if r.dump {
			flags |= unix.NLM_F_DUMP
		}
		r.seq, r.done, r.intr, r.msgs, r.err = n.nextSeq(), false, false, nil, nil
		bySeq[r.seq] = r
		hdr := []byte{byte(r.fam), unix.NFNETLINK_V0, 0, 0}
		b = appendMsg(b, uint16(unix.NFNL_SUBSYS_NFTABLES<<8)|r.typ, flags, r.seq, append(hdr, data...))
	}
	if err := n.send(b); err != nil {
		return err
	}
	pending := len(reqs)
	for pending > 0 {
		refused := false
		err := n.recv(false, func(m nlMsg) {
			r := bySeq[m.seq]
			if r == nil || r.done {
				return // a stale reply of an interrupted exchange
			}
			r.intr = r.intr || m.flags&unix.NLM_F_DUMP_INTR != 0
			switch {
			case m.typ == unix.NLMSG_ERROR || m.typ == unix.NLMSG_DONE:
				r.err = errnoOf(m.data)
				r.done = true
				refused = refused || r.err == unix.EPERM
			case m.typ == unix.NLMSG_NOOP:
			default:
				r.msgs = append(r.msgs, nlMsg{typ: m.typ, flags: m.flags, seq: m.seq, data: append([]byte(nil), m.data...)})
				if !r.dump {
					r.done = true
				}
			}
			if r.done {
				pending--
			}
		})
		if err != nil {
			return err
		}
		if refused {
			return errRefused
		}
	}
	return nil
}

// errRefused is the answer to a process without CAP_NET_ADMIN. The kernel
// checks it once per sendmsg (nfnetlink_rcv): it answers the first message
// with EPERM and drops the others unanswered, so nothing else will come.
var errRefused = fmt.Errorf("nftables request refused without CAP_NET_ADMIN: %w", unix.EPERM)

// batch sends one nftables transaction (BEGIN, msgs, END) acknowledged on
// its last message only, and returns the errors the kernel reported: each
// errno once, with the first message that got it (see batchError).
func (n *nlConn) batch(msgs []txnMsg) error {
	if len(msgs) == 0 {
		return nil
	}
	subsys := []byte{0, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES} // res_id, big endian
	if n.seq >= 1<<31-uint32(len(msgs))-2 {
		n.seq = 0 // the batch's sequence numbers must not wrap: see batchErrors
	}
	b := appendMsg(nil, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, n.nextSeq(), subsys)
	first := n.seq + 1
	for i, m := range msgs {
		flags := unix.NLM_F_REQUEST | m.flags
		if i == len(msgs)-1 {
			flags |= unix.NLM_F_ACK
		}
		seq := n.nextSeq()
		hdr := []byte{byte(m.fam), unix.NFNETLINK_V0, 0, 0}
		b = appendMsg(b, uint16(unix.NFNL_SUBSYS_NFTABLES<<8)|m.typ, flags, seq, append(hdr, m.data...))
	}
	b = appendMsg(b, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, n.nextSeq(), subsys)
	if err := n.send(b); err != nil {
		return err
	}
	return n.batchErrors(msgs, first)
}

// batchErrors reads the replies of a batch whose messages msgs have
// sequence numbers from first on. Everything is queued once send returns:
// it reads until the ack of the last message, or until the queue is empty
// (a batch-level error such as ENOMEM may come without it).
func (n *nlConn) batchErrors(msgs []txnMsg, first uint32) error {
	last := first + uint32(len(msgs)) - 1
	var errs batchErrs
	acked, seen := false, false
	for !acked {
		err := n.recv(seen, func(m nlMsg) {
			if m.seq < first-1 || m.seq > last+1 || m.typ != unix.NLMSG_ERROR {
				return
			}
			seen = true
			e, _ := errnoOf(m.data).(unix.Errno)
			switch {
			case m.seq == first-1:
				// The batch was refused as a whole (nfnetlink_rcv:
				// CAP_NET_ADMIN), on its BEGIN message: nothing follows.
				errs.add(e, msgs, -1)
				acked = true
			case e != 0:
				errs.add(e, msgs, int(m.seq-first))
			}
			if m.seq == last {
				acked = true
			}
		})
		if err == errWouldBlock {
			break
		}
		if err != nil {
			return err
		}
	}
	return errs.join()
}

// batchError is one errno the kernel gave in a transaction. A transaction
// that fails, fails the same way for many of its messages (one "file
// exists" per element in the way): the errno is reported once, with the
// first message that got it and how many others did.
type batchError struct {
	errno unix.Errno
	what  string // the first message that failed with errno
	more  int    // how many other messages did
}

func (e *batchError) Error() string {
	s := e.what + ": " + e.errno.Error()
	if e.more > 0 {
		s += fmt.Sprintf(" (and %d more)", e.more)
	}
	return s
}

func (e *batchError) Unwrap() error { return e.errno }

// batchErrs collects a transaction's errors, one per errno, in the order
// the kernel reported them.
type batchErrs []*batchError

// add records errno for message i of msgs (-1: the batch's BEGIN, where
// the kernel refuses a whole batch; len(msgs): its END, where it reports a
// failed commit).
func (b *batchErrs) add(errno unix.Errno, msgs []txnMsg, i int) {
	for _, e := range *b {
		if e.errno == errno {
			e.more++
			return
		}
	}
	what := "commit"
	switch {
	case i < 0:
		what = "begin a transaction"
	case i < len(msgs):
		what = msgs[i].describe()
	}
	*b = append(*b, &batchError{errno: errno, what: what})
}

func (b batchErrs) join() error {
	errs := make([]error, len(b))
	for i, e := range b {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// describe names what a transaction message does and to which object,
// such as "add elements to set inet nswire nets4", so that a kernel error
// names the object it is about.
func (m txnMsg) describe() string {
	names := map[uint16]string{}
	if attrs, err := netlink.UnmarshalAttributes(m.data); err == nil {
		for _, a := range attrs {
			names[a.Type&^unix.NLA_F_NESTED] = strings.TrimRight(string(a.Data), "\x00")
		}
	}
	// Every message type names its table in attribute 1 (NFTA_*_TABLE).
	obj := func(kind string, nameAttr uint16) string {
		return fmt.Sprintf("%s %s %s %s", kind, famName(m.fam), names[1], names[nameAttr])
	}
	switch m.typ {
	case unix.NFT_MSG_NEWSETELEM:
		return "add elements to " + obj("set", unix.NFTA_SET_ELEM_LIST_SET)
	case unix.NFT_MSG_DELSETELEM:
		return "delete elements from " + obj("set", unix.NFTA_SET_ELEM_LIST_SET)
	case unix.NFT_MSG_NEWCHAIN:
		return "add " + obj("chain", unix.NFTA_CHAIN_NAME)
	case unix.NFT_MSG_DELCHAIN:
		return "delete " + obj("chain", unix.NFTA_CHAIN_NAME)
	case unix.NFT_MSG_NEWRULE:
		return "add a rule to " + obj("chain", unix.NFTA_RULE_CHAIN)
	case unix.NFT_MSG_DELRULE:
		return "flush " + obj("chain", unix.NFTA_RULE_CHAIN)
	case unix.NFT_MSG_DELTABLE:
		return fmt.Sprintf("delete table %s %s", famName(m.fam), TableName)
	}
	return fmt.Sprintf("nftables message %d", m.typ)
}

func famName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyBridge {
		return "bridge"
	}
	return "inet"
}
