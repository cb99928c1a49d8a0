package firewall

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// txn is one nftables transaction of ADD, DEL or GC, built here and sent
// on nswire's own socket (nl.go). google/nftables cannot express two of
// its requests: an element add with NLM_F_EXCL (see addExclusive) and a
// table delete by handle (see delTable). Its other messages (elements,
// record chains of rules without expressions) are few and simple, so the
// whole transaction is built in one place, each message with its flags.
type txn struct {
	msgs []txnMsg
	err  error // the first encoding error; commit reports it
}

// txnMsg is one message of a transaction, without its sequence number.
type txnMsg struct {
	typ   uint16 // NFT_MSG_*
	flags uint16 // beyond NLM_F_REQUEST
	fam   nftables.TableFamily
	data  []byte // attributes
}

// setElem is one element of a set or map.
type setElem struct {
	key, keyEnd []byte // keyEnd: a range of a concatenated interval set
	val         []byte // the datum of a data map
	intervalEnd bool   // the end of an interval (rbtree interval sets)
	comment     string
}

func (tx *txn) put(typ, flags uint16, t *nftables.Table, attrs []netlink.Attribute) {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil && tx.err == nil {
		tx.err = err
	}
	tx.msgs = append(tx.msgs, txnMsg{typ: typ, flags: flags, fam: t.Family, data: b})
}

// addElems adds elements; adding one that is there with the same datum is
// a no-op.
func (tx *txn) addElems(t *nftables.Table, set string, els ...setElem) {
	tx.elems(unix.NFT_MSG_NEWSETELEM, unix.NLM_F_CREATE, t, set, els)
}

// addExclusive adds elements that must not be there yet (NLM_F_EXCL): the
// kernel refuses a key that is held, even with an equal datum. Two
// attachments may translate to the same container address and port (in
// networks whose subnets overlap): without the flag the second one's
// element would be taken as already there, and its overlap assertion (add,
// then delete) would delete the first one's element.
func (tx *txn) addExclusive(t *nftables.Table, set string, els ...setElem) {
	tx.elems(unix.NFT_MSG_NEWSETELEM, unix.NLM_F_CREATE|unix.NLM_F_EXCL, t, set, els)
}

func (tx *txn) delElems(t *nftables.Table, set string, els ...setElem) {
	tx.elems(unix.NFT_MSG_DELSETELEM, 0, t, set, els)
}

func (tx *txn) elems(typ, flags uint16, t *nftables.Table, set string, els []setElem) {
	list := make([]netlink.Attribute, len(els))
	for i, e := range els {
		b, err := netlink.MarshalAttributes(e.attrs())
		if err != nil && tx.err == nil {
			tx.err = err
		}
		list[i] = netlink.Attribute{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: b}
	}
	b, err := netlink.MarshalAttributes(list)
	if err != nil && tx.err == nil {
		tx.err = err
	}
	tx.put(typ, flags, t, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: b},
	})
}

func (e setElem) attrs() []netlink.Attribute {
	out := []netlink.Attribute{dataValue(unix.NFTA_SET_ELEM_KEY, e.key)}
	if e.keyEnd != nil {
		out = append(out, dataValue(nftaSetElemKeyEnd, e.keyEnd))
	}
	if e.intervalEnd {
		out = append(out, netlink.Attribute{Type: unix.NFTA_SET_ELEM_FLAGS,
			Data: binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END)})
	}
	if e.val != nil {
		out = append(out, dataValue(unix.NFTA_SET_ELEM_DATA, e.val))
	}
	if e.comment != "" {
		out = append(out, netlink.Attribute{Type: unix.NFTA_SET_ELEM_USERDATA,
			Data: userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, e.comment)})
	}
	return out
}

// dataValue is attribute typ holding b as its NFTA_DATA_VALUE.
func dataValue(typ uint16, b []byte) netlink.Attribute {
	v, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: b}})
	return netlink.Attribute{Type: typ | unix.NLA_F_NESTED, Data: v}
}

// addChain adds a regular chain (no hook); a no-op when it exists.
func (tx *txn) addChain(t *nftables.Table, name string) {
	tx.put(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, t, chainAttrs(t, name))
}

func (tx *txn) delChain(t *nftables.Table, name string) {
	tx.put(unix.NFT_MSG_DELCHAIN, 0, t, chainAttrs(t, name))
}

func chainAttrs(t *nftables.Table, name string) []netlink.Attribute {
	return []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr(name)},
	}
}

// flushChain deletes every rule of a chain.
func (tx *txn) flushChain(t *nftables.Table, chain string) {
	tx.put(unix.NFT_MSG_DELRULE, 0, t, ruleAttrs(t, chain))
}

// addRecord appends to a record chain a rule without expressions whose
// comment is note: nothing evaluates it, and a commit never validates it.
func (tx *txn) addRecord(t *nftables.Table, chain, note string) {
	attrs := append(ruleAttrs(t, chain), netlink.Attribute{Type: unix.NFTA_RULE_USERDATA, Data: comment(note)})
	tx.put(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, t, attrs)
}

func ruleAttrs(t *nftables.Table, chain string) []netlink.Attribute {
	return []netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_RULE_CHAIN, Data: cstr(chain)},
	}
}

// delTable deletes the table whose handle is h. Handles are never reused
// in a namespace, so the delete fails (ENOENT) when someone already
// replaced the table this process saw: see rebuild.
func (tx *txn) delTable(t *nftables.Table, h uint64) {
	tx.put(unix.NFT_MSG_DELTABLE, 0, t, []netlink.Attribute{
		{Type: nftaTableHandle, Data: binary.BigEndian.AppendUint64(nil, h)},
	})
}
