package ipam

import (
	"net/netip"
	"strings"
)

// Range is a validated host-local range. RangeStart and RangeEnd are
// clamped to the addresses a container may hold (see hostBounds), so
// iterating [RangeStart, RangeEnd] and skipping Gateway is enough.
type Range struct {
	Subnet     netip.Prefix
	RangeStart netip.Addr
	RangeEnd   netip.Addr
	Gateway    netip.Addr // invalid (zero) when the subnet has no gateway
}

// RangeSet is a list of ranges of one family; an attachment gets exactly one
// address from each range set.
type RangeSet []Range

func parseRange(field string, rr rawRange) (Range, error) {
	subnet, err := netip.ParsePrefix(rr.Subnet)
	if err != nil {
		return Range{}, configError(field+".subnet", "%q: %s", rr.Subnet, err.Error())
	}
	if subnet.Addr().Is4In6() {
		return Range{}, configError(field+".subnet", "%s: IPv4-mapped subnets are not supported", subnet)
	}
	if subnet != subnet.Masked() {
		return Range{}, configError(field+".subnet", "%s has host bits set; the network address is %s", subnet, subnet.Masked().Addr())
	}
	first, last := hostBounds(subnet)
	r := Range{Subnet: subnet}
	if r.Gateway, err = parseGateway(field+".gateway", rr.Gateway, subnet, first, last); err != nil {
		return Range{}, err
	}
	if r.RangeStart, err = parseBound(field+".rangeStart", rr.RangeStart, subnet, first); err != nil {
		return Range{}, err
	}
	if r.RangeEnd, err = parseBound(field+".rangeEnd", rr.RangeEnd, subnet, last); err != nil {
		return Range{}, err
	}
	// An explicit bound on the network or broadcast address is tolerated
	// (host-local accepts it) but those addresses are never handed out.
	r.RangeStart, r.RangeEnd = maxAddr(r.RangeStart, first), minAddr(r.RangeEnd, last)
	if r.RangeEnd.Less(r.RangeStart) {
		return Range{}, configError(field+".rangeEnd", "%s is before rangeStart %s (after excluding network/broadcast)", r.RangeEnd, r.RangeStart)
	}
	if r.RangeStart == r.RangeEnd && r.RangeStart == r.Gateway {
		return Range{}, configError(field, "no allocatable address: the only address %s is the gateway", r.Gateway)
	}
	return r, nil
}

// hostBounds returns the first and last address a container may get. The
// network address (for IPv6 the subnet-router anycast address) and the IPv4
// broadcast address are excluded, except in point-to-point /31 and /127
// (RFC 3021, RFC 6164) and single-address /32 and /128 subnets, which have
// neither.
func hostBounds(p netip.Prefix) (first, last netip.Addr) {
	first, last = p.Addr(), lastAddr(p)
	if p.Bits() >= first.BitLen()-1 {
		return first, last
	}
	first = first.Next()
	if first.Is4() {
		last = last.Prev()
	}
	return first, last
}

// parseGateway defaults like host-local (network + 1). In a /31 or /127 the
// default is the lower address, leaving the upper one to the container; a
// /32 or /128 has no room for a gateway.
func parseGateway(field, s string, subnet netip.Prefix, first, last netip.Addr) (netip.Addr, error) {
	single := subnet.Bits() == subnet.Addr().BitLen()
	if s == "" {
		if single {
			return netip.Addr{}, nil
		}
		return first, nil
	}
	gw, err := parseHostIP(s)
	if err != nil {
		return netip.Addr{}, configError(field, "%q: %s", s, err.Error())
	}
	if single {
		return netip.Addr{}, configError(field, "%s: a single-address subnet %s has no room for a gateway", gw, subnet)
	}
	if !subnet.Contains(gw) || gw.Less(first) || last.Less(gw) {
		return netip.Addr{}, configError(field, "%s is not a host address of %s", gw, subnet)
	}
	return gw, nil
}

func parseBound(field, s string, subnet netip.Prefix, def netip.Addr) (netip.Addr, error) {
	if s == "" {
		return def, nil
	}
	ip, err := parseHostIP(s)
	if err != nil {
		return netip.Addr{}, configError(field, "%q: %s", s, err.Error())
	}
	if !subnet.Contains(ip) {
		return netip.Addr{}, configError(field, "%s not in subnet %s", ip, subnet)
	}
	return ip, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := max(0, min(8, p.Bits()-8*i))
		b[i] |= byte(0xff >> hostBits)
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip
}

func minAddr(a, b netip.Addr) netip.Addr {
	if b.Less(a) {
		return b
	}
	return a
}

func maxAddr(a, b netip.Addr) netip.Addr {
	if a.Less(b) {
		return b
	}
	return a
}

func (r Range) contains(ip netip.Addr) bool {
	return ip.BitLen() == r.RangeStart.BitLen() && !ip.Less(r.RangeStart) && !r.RangeEnd.Less(ip)
}

func (r Range) overlaps(o Range) bool {
	return r.RangeStart.BitLen() == o.RangeStart.BitLen() &&
		!r.RangeEnd.Less(o.RangeStart) && !o.RangeEnd.Less(r.RangeStart)
}

func (r Range) String() string {
	return r.RangeStart.String() + "-" + r.RangeEnd.String()
}

// find returns the index of the range holding ip.
func (s RangeSet) find(ip netip.Addr) (int, bool) {
	for i, r := range s {
		if r.contains(ip) {
			return i, true
		}
	}
	return 0, false
}

func (s RangeSet) isGateway(ip netip.Addr) bool {
	for _, r := range s {
		if r.Gateway == ip {
			return true
		}
	}
	return false
}

// after returns the address following ip in allocation order: through each
// range, then on to the next range, wrapping around at the end of the set.
func (s RangeSet) after(ip netip.Addr) netip.Addr {
	i, ok := s.find(ip)
	if !ok {
		return s[0].RangeStart
	}
	if ip != s[i].RangeEnd {
		return ip.Next()
	}
	return s[(i+1)%len(s)].RangeStart
}

func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}
