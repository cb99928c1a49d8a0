package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/firewall"
)

// The NFT_MSG_DESTROY* types (Linux 6.3: delete, no error when missing)
// are not in x/sys yet.
const (
	nftMsgDestroyTable = 0x1a + iota
	nftMsgDestroyChain
	nftMsgDestroyRule
	nftMsgDestroySet
	nftMsgDestroySetElem
	nftMsgDestroyObj
	nftMsgDestroyFlowtable
)

// nftLoss names the notifications that remove something from a table.
var nftLoss = map[uint16]string{
	unix.NFT_MSG_DELTABLE: "table deleted", nftMsgDestroyTable: "table deleted",
	unix.NFT_MSG_DELCHAIN: "chain deleted", nftMsgDestroyChain: "chain deleted",
	unix.NFT_MSG_DELRULE: "rule deleted", nftMsgDestroyRule: "rule deleted",
	unix.NFT_MSG_DELSET: "set deleted", nftMsgDestroySet: "set deleted",
	unix.NFT_MSG_DELSETELEM: "set element deleted", nftMsgDestroySetElem: "set element deleted",
	unix.NFT_MSG_DELOBJ: "object deleted", nftMsgDestroyObj: "object deleted",
	unix.NFT_MSG_DELFLOWTABLE: "flowtable deleted", nftMsgDestroyFlowtable: "flowtable deleted",
}

// nswireComms are the comms of nswire's binaries: their transactions are
// nswire's own churn (ADD, DEL, GC, a repair).
var nswireComms = map[string]bool{"nswire": true, "nswire-restore": true, "nswire-agent": true}

// nftEvents follows the nftables notifications of one namespace, one
// transaction at a time: its messages, then the NFT_MSG_NEWGEN that
// closes it and names who committed it.
type nftEvents struct {
	lost      string // the first loss in nswire's tables of the open transaction
	tableGone bool   // the open transaction deleted one of nswire's tables
	own       func(pid uint32) bool
}

// handle reads one notification and returns why a pass is needed when it
// closes a transaction that counts (see the package doc), else "".
func (e *nftEvents) handle(m netlink.Message) string {
	typ := uint16(m.Header.Type)
	if typ>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
		return ""
	}
	msg, fam, attrs := typ&0xff, m.Data[0], m.Data[4:]
	if msg == unix.NFT_MSG_NEWGEN {
		why := e.judge(parseGen(attrs))
		e.lost, e.tableGone = "", false
		return why
	}
	what, ok := nftLoss[msg]
	if !ok || (fam != unix.NFPROTO_INET && fam != unix.NFPROTO_BRIDGE) || tableOf(attrs) != firewall.TableName {
		return ""
	}
	if e.lost == "" {
		e.lost = fmt.Sprintf("%s in table %s %s", what, famName(fam), firewall.TableName)
	}
	if msg == unix.NFT_MSG_DELTABLE || msg == nftMsgDestroyTable {
		e.tableGone = true
	}
	return ""
}

// judge decides on a closed transaction: a loss counts unless nswire made
// it, and one of nswire's tables deleted counts even then (an ADD rebuilt
// a flushed or older table: every attachment lost its elements), but not
// when this very process did it (a repair rebuilding).
func (e *nftEvents) judge(pid uint32, comm string) string {
	switch {
	case e.lost == "":
		return ""
	case e.own(pid):
		return ""
	case nswireComms[comm] && !e.tableGone:
		return ""
	}
	return fmt.Sprintf("%s by %s (pid %d)", e.lost, comm, pid)
}

// ownThread reports whether pid (a thread id, as NFTA_GEN_PROC_PID
// carries) is a thread of this process.
func ownThread(pid uint32) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", pid))
	return err == nil
}

func parseGen(attrs []byte) (pid uint32, comm string) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return 0, ""
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_GEN_PROC_PID:
			pid = ad.Uint32()
		case unix.NFTA_GEN_PROC_NAME:
			comm = ad.String()
		}
	}
	return pid, comm
}

// tableOf is the table a notification is about: attribute 1 in every
// object's message (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_SET_TABLE...).
func tableOf(attrs []byte) string {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == 1 {
			return ad.String()
		}
	}
	return ""
}

func famName(fam byte) string {
	if fam == unix.NFPROTO_BRIDGE {
		return "bridge"
	}
	return "inet"
}

// Markers of nswire's links (pkg/link's alias and pkg/shaping's ifb alias).
const (
	vethMark = "nswire/"
	ifbMark  = "nswire-shaping/"
)

// tcEvents follows rtnetlink's tc and link notifications: a qdisc or
// filter removed from one of nswire's links, or one of its ifbs deleted
// while its host veth lives. The notifications do not say who did it;
// nswire's own tc changes replace or add, and its DEL deletes the veth
// before the ifb, so neither counts.
type tcEvents struct {
	h *vnl.Handle // lookups in the host namespace
}

func (e *tcEvents) handle(m netlink.Message) string {
	switch uint16(m.Header.Type) {
	case unix.RTM_DELQDISC, unix.RTM_DELTFILTER:
		return e.tcLoss(uint16(m.Header.Type), m.Data)
	case unix.RTM_DELLINK:
		return e.ifbLoss(m.Data)
	}
	return ""
}

// sizeofTcMsg: a tcmsg is family, padding (3), ifindex, handle, parent, info.
const sizeofTcMsg = 20

func (e *tcEvents) tcLoss(typ uint16, data []byte) string {
	if len(data) < sizeofTcMsg {
		return ""
	}
	index := int(int32(binary.NativeEndian.Uint32(data[4:8])))
	kind := attrString(data[sizeofTcMsg:], unix.TCA_KIND)
	if typ == unix.RTM_DELQDISC && kind != "tbf" && kind != "ingress" {
		return "" // the default qdiscs the kernel swaps in and out
	}
	l, err := e.h.LinkByIndex(index)
	if err != nil {
		return "" // the link went with it
	}
	name, alias := l.Attrs().Name, l.Attrs().Alias
	if !strings.HasPrefix(alias, vethMark) && !strings.HasPrefix(alias, ifbMark) {
		return ""
	}
	what := "qdisc " + kind
	if typ == unix.RTM_DELTFILTER {
		what = "filter " + kind
	}
	return fmt.Sprintf("%s deleted from %s", what, name)
}

// ifbLoss: an ifinfomsg is family, padding, type, index, flags, change.
func (e *tcEvents) ifbLoss(data []byte) string {
	if len(data) < unix.SizeofIfInfomsg {
		return ""
	}
	veth, ok := strings.CutPrefix(attrString(data[unix.SizeofIfInfomsg:], unix.IFLA_IFALIAS), ifbMark)
	if !ok {
		return ""
	}
	if _, err := e.h.LinkByName(veth); err != nil {
		return "" // the container's DEL: the veth went first
	}
	return fmt.Sprintf("ifb of %s deleted", veth)
}

func attrString(attrs []byte, typ uint16) string {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == typ {
			return ad.String()
		}
	}
	return ""
}

// listen opens a netlink socket of family in the namespace fd (0: the
// caller's), subscribed to groups (RTNLGRP_*/NFNLGRP_* numbers).
func listen(family, fd int, groups ...uint32) (*netlink.Conn, error) {
	var mask uint32
	for _, g := range groups {
		mask |= 1 << (g - 1)
	}
	c, err := netlink.Dial(family, &netlink.Config{Groups: mask, NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("netlink events: %w", err)
	}
	// A reload can announce thousands of deletions at once; an overflow
	// costs only a pass (ENOBUFS), but a large buffer avoids it.
	if err := forceReadBuffer(c, 8<<20); err != nil {
		_ = c.SetReadBuffer(8 << 20)
	}
	return c, nil
}

func forceReadBuffer(c *netlink.Conn, size int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	})
	return errors.Join(err, serr)
}

// read delivers the reason of each notification that needs a pass, and
// "events lost" when the socket overflowed. It returns when c is closed
// or fails otherwise.
func read(c *netlink.Conn, handle func(netlink.Message) string, trigger func(string)) error {
	for {
		msgs, err := c.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			trigger("notifications lost (socket buffer overflow)")
			continue
		}
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if why := handle(m); why != "" {
				trigger(why)
			}
		}
	}
}
