package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The targeted (non-dump) GET requests that google/nftables does not
// offer: one set element by key, one chain by name. They are what keeps
// ADD, DEL and CHECK O(1): the kernel looks the object up in its hash
// tables and answers with that object only. Requests of one round are
// pipelined (see nl.go).

// isNotFound reports ENOENT, which the kernel returns for a missing table,
// chain, set or element.
func isNotFound(err error) bool {
	// google/nftables formats some receive errors with %v, losing the errno.
	return errors.Is(err, unix.ENOENT) || (err != nil && strings.HasSuffix(err.Error(), unix.ENOENT.Error()))
}

func getTableReq(t *nftables.Table) *request {
	return &request{typ: unix.NFT_MSG_GETTABLE, fam: t.Family, attrs: []netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: cstr(t.Name)},
	}}
}

func getChainReq(t *nftables.Table, name string) *request {
	return &request{typ: unix.NFT_MSG_GETCHAIN, fam: t.Family, attrs: []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr(name)},
	}}
}

// dumpRulesReq lists the rules of one chain (empty when it is missing).
func dumpRulesReq(t *nftables.Table, chain string) *request {
	return &request{typ: unix.NFT_MSG_GETRULE, fam: t.Family, dump: true, attrs: []netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_RULE_CHAIN, Data: cstr(chain)},
	}}
}

func getElemReq(t *nftables.Table, set string, key []byte) *request {
	return getRangeReq(t, set, key, nil)
}

// getRangeReq asks for one element of a set by key and, for a range of
// concatenations, key end. An interval set answers with the interval
// holding the key.
func getRangeReq(t *nftables.Table, set string, key, keyEnd []byte) *request {
	value := func(typ uint16, b []byte) netlink.Attribute {
		v, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: b}})
		return netlink.Attribute{Type: typ | unix.NLA_F_NESTED, Data: v}
	}
	attrs := []netlink.Attribute{value(unix.NFTA_SET_ELEM_KEY, key)}
	if keyEnd != nil {
		attrs = append(attrs, value(nftaSetElemKeyEnd, keyEnd))
	}
	e, _ := netlink.MarshalAttributes(attrs)
	list, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: e}})
	return &request{typ: unix.NFT_MSG_GETSETELEM, fam: t.Family, attrs: []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: list},
	}}
}

// dumpElemsReq lists the elements of one set.
func dumpElemsReq(t *nftables.Table, set string) *request {
	return &request{typ: unix.NFT_MSG_GETSETELEM, fam: t.Family, dump: true, attrs: []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
	}}
}

// exists reports whether a GET found its object.
func (r *request) exists() (bool, error) {
	if isNotFound(r.err) {
		return false, nil
	}
	if r.err != nil {
		return false, r.err
	}
	return true, nil
}

// replies calls fn with an attribute decoder for each reply message (past
// its nfgenmsg header); undecodable messages are skipped.
func (r *request) replies(fn func(*netlink.AttributeDecoder)) {
	for _, m := range r.msgs {
		if len(m.data) < 4 {
			continue
		}
		if ad, err := netlink.NewAttributeDecoder(m.data[4:]); err == nil {
			fn(ad)
		}
	}
}

// chainUse is the reference count of the chain a GETCHAIN returned: its
// rules plus the jumps and gotos to it.
func (r *request) chainUse() uint32 {
	var use uint32
	r.replies(func(ad *netlink.AttributeDecoder) {
		for ad.Next() {
			if ad.Type() == unix.NFTA_CHAIN_USE && len(ad.Bytes()) == 4 {
				use = binary.BigEndian.Uint32(ad.Bytes())
			}
		}
	})
	return use
}

// ruleComments are the comments of the rules a GETRULE dump returned, in
// chain order.
func (r *request) ruleComments() []string {
	var out []string
	r.replies(func(ad *netlink.AttributeDecoder) {
		c := ""
		for ad.Next() {
			if ad.Type() == unix.NFTA_RULE_USERDATA {
				c, _ = userdata.GetString(ad.Bytes(), userdata.Type(0))
			}
		}
		out = append(out, c)
	})
	return out
}

// elem decodes the element a GETSETELEM returned (found false if none).
func (r *request) elem() (elem, error) {
	var out elem
	if isNotFound(r.err) {
		return out, nil
	}
	if r.err != nil {
		return out, r.err
	}
	for _, m := range r.msgs {
		if len(m.data) < 4 {
			continue
		}
		if err := parseElemMsg(m.data[4:], &out); err != nil {
			return elem{}, err
		}
	}
	return out, nil
}

// elemKeys decodes the keys a GETSETELEM dump returned.
func (r *request) elemKeys() [][]byte {
	var out [][]byte
	r.replies(func(ad *netlink.AttributeDecoder) {
		eachElem(ad, func(e *netlink.AttributeDecoder) {
			for e.Next() {
				if e.Type() != unix.NFTA_SET_ELEM_KEY {
					continue
				}
				if v := nestedValue(e, unix.NFTA_DATA_VALUE); v != nil {
					out = append(out, v)
				}
			}
		})
	})
	return out
}

// eachElem calls fn with a decoder over each element in a set element
// message's NFTA_SET_ELEM_LIST_ELEMENTS.
func eachElem(ad *netlink.AttributeDecoder, fn func(e *netlink.AttributeDecoder)) {
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				list.Nested(func(e *netlink.AttributeDecoder) error {
					fn(e)
					return nil
				})
			}
			return nil
		})
	}
}

// nestedValue is the attribute of type typ nested in ad's current one.
func nestedValue(ad *netlink.AttributeDecoder, typ uint16) []byte {
	var v []byte
	ad.Nested(func(d *netlink.AttributeDecoder) error {
		for d.Next() {
			if d.Type() == typ {
				v = d.Bytes()
			}
		}
		return nil
	})
	return v
}

// elem is what a GET of one set or map element returns.
type elem struct {
	found       bool
	key, keyEnd []byte
	data        []byte // datum (data maps)
	comment     string
}

// getElem asks for one element of a set or map by key.
func (f *Firewall) getElem(t *nftables.Table, set string, key []byte) (elem, error) {
	r := getElemReq(t, set, key)
	if err := f.q.exchange(r); err != nil {
		return elem{}, err
	}
	e, err := r.elem()
	if err != nil {
		return elem{}, fmt.Errorf("get element of %s: %w", set, err)
	}
	return e, nil
}

func parseElemMsg(b []byte, out *elem) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	eachElem(ad, func(e *netlink.AttributeDecoder) { *out = decodeElem(e) })
	return ad.Err()
}

// chainComments lists the rule comments of one chain, in order (a
// missing chain has none): how records are read off the hot path.
func (f *Firewall) chainComments(t *nftables.Table, chain string) ([]string, error) {
	r := dumpRulesReq(t, chain)
	if err := f.q.exchange(r); err != nil {
		return nil, err
	}
	if r.err != nil && !isNotFound(r.err) {
		return nil, fmt.Errorf("read chain %s: %w", chain, r.err)
	}
	return r.ruleComments(), nil
}

// chainNames lists the names of the chains of nswire's table in family
// fam (the kernel filters a chain dump by family only). Unlike
// google/nftables' listing, an interrupted dump is read again (exchange),
// so GC does not miss a chain another network's ADD was changing.
func (f *Firewall) chainNames(fam nftables.TableFamily) ([]string, error) {
	r := &request{typ: unix.NFT_MSG_GETCHAIN, fam: fam, dump: true}
	if err := f.q.exchange(r); err != nil {
		return nil, err
	}
	if r.err != nil {
		return nil, fmt.Errorf("list %s chains: %w", famName(fam), r.err)
	}
	var out []string
	r.replies(func(ad *netlink.AttributeDecoder) {
		var table, name string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				table = strings.TrimRight(string(ad.Bytes()), "\x00")
			case unix.NFTA_CHAIN_NAME:
				name = strings.TrimRight(string(ad.Bytes()), "\x00")
			}
		}
		if table == TableName {
			out = append(out, name)
		}
	})
	return out, nil
}

// listElems lists the elements of one set; a missing
// set has none. A slow path: ADD and DEL never list a set of all
// attachments.
func (f *Firewall) listElems(t *nftables.Table, set string) ([]elem, error) {
	r := dumpElemsReq(t, set)
	if err := f.q.exchange(r); err != nil {
		return nil, err
	}
	if isNotFound(r.err) {
		return nil, nil
	}
	if r.err != nil {
		return nil, fmt.Errorf("list %s: %w", set, r.err)
	}
	return r.elems(), nil
}

// elems decodes the elements a GETSETELEM dump returned.
func (r *request) elems() []elem {
	var out []elem
	r.replies(func(ad *netlink.AttributeDecoder) {
		eachElem(ad, func(e *netlink.AttributeDecoder) { out = append(out, decodeElem(e)) })
	})
	return out
}

func decodeElem(e *netlink.AttributeDecoder) elem {
	out := elem{found: true}
	for e.Next() {
		switch e.Type() {
		case unix.NFTA_SET_ELEM_KEY:
			out.key = nestedValue(e, unix.NFTA_DATA_VALUE)
		case nftaSetElemKeyEnd:
			out.keyEnd = nestedValue(e, unix.NFTA_DATA_VALUE)
		case unix.NFTA_SET_ELEM_DATA:
			out.data = nestedValue(e, unix.NFTA_DATA_VALUE)
		case unix.NFTA_SET_ELEM_USERDATA:
			out.comment, _ = userdata.GetString(e.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
		}
	}
	return out
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// nftaSetElemKeyEnd is NFTA_SET_ELEM_KEY_END (Linux 5.6), missing from
// x/sys/unix.
const nftaSetElemKeyEnd = 10

// nftaTableHandle is NFTA_TABLE_HANDLE (Linux 4.16), missing from
// x/sys/unix.
const nftaTableHandle = 4
