package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// querier sends the targeted (non-dump) GET requests that google/nftables
// does not offer: one set element by key, one chain by name. They are what
// keeps DEL and CHECK O(1): the kernel looks the object up in its hash
// tables and answers with that object only.
type querier struct {
	c *netlink.Conn
}

func dialQuerier(fd int) (*querier, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	return &querier{c: c}, nil
}

func (q *querier) close() { q.c.Close() }

func (q *querier) get(t *nftables.Table, msgType uint16, attrs []netlink.Attribute) ([]netlink.Message, error) {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	hdr := []byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}
	return q.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType), Flags: netlink.Request},
		Data:   append(hdr, data...),
	})
}

// isNotFound reports ENOENT, which the kernel returns for a missing table,
// chain, set or element.
func isNotFound(err error) bool {
	// google/nftables formats some receive errors with %v, losing the errno.
	return errors.Is(err, unix.ENOENT) || (err != nil && strings.HasSuffix(err.Error(), unix.ENOENT.Error()))
}

// chainExists asks for one chain by name.
func (q *querier) chainExists(t *nftables.Table, name string) (bool, error) {
	_, err := q.get(t, unix.NFT_MSG_GETCHAIN, []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr(name)},
	})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get chain %s %s: %w", t.Name, name, err)
	}
	return true, nil
}

// elem is what a GET of one verdict-map element returns.
type elem struct {
	found   bool
	chain   string // jump/goto target
	comment string
}

// getElem asks for one element of a set or map by key.
func (q *querier) getElem(t *nftables.Table, set string, key []byte) (elem, error) {
	k, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: key}})
	e, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED, Data: k}})
	list, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: e}})
	msgs, err := q.get(t, unix.NFT_MSG_GETSETELEM, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(t.Name)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: list},
	})
	if isNotFound(err) {
		return elem{}, nil
	}
	if err != nil {
		return elem{}, fmt.Errorf("get element of %s: %w", set, err)
	}
	var out elem
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		if err := parseElemMsg(m.Data[4:], &out); err != nil {
			return elem{}, err
		}
	}
	return out, nil
}

func parseElemMsg(b []byte, out *elem) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(l *netlink.AttributeDecoder) error {
			for l.Next() {
				l.Nested(func(e *netlink.AttributeDecoder) error {
					out.found = true
					for e.Next() {
						switch e.Type() {
						case unix.NFTA_SET_ELEM_DATA:
							e.Nested(func(d *netlink.AttributeDecoder) error {
								for d.Next() {
									if d.Type() == unix.NFTA_DATA_VERDICT {
										d.Nested(func(v *netlink.AttributeDecoder) error {
											for v.Next() {
												if v.Type() == unix.NFTA_VERDICT_CHAIN {
													out.chain = v.String()
												}
											}
											return nil
										})
									}
								}
								return nil
							})
						case unix.NFTA_SET_ELEM_USERDATA:
							out.comment, _ = userdata.GetString(e.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	return ad.Err()
}

func cstr(s string) []byte { return append([]byte(s), 0) }
