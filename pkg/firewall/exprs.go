package firewall

import (
	"encoding/binary"
	"net"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Registers: 1 is a 16-byte register for single values; concatenations
// start at the first 4-byte register (NFT_REG32_00) as nft does.
const (
	reg1      = 1
	reg32     = 8
	rtnLocal  = 2    // RTN_LOCAL
	ipsDstNAT = 0x20 // IPS_DST_NAT
)

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

func be16(v int) []byte { return binaryutil.BigEndian.PutUint16(uint16(v)) }

func ip4(ip net.IP) []byte { return []byte(ip.To4()) }
func ip6(ip net.IP) []byte { return []byte(ip.To16()) }

func ipBytes(ip net.IP, fam family) []byte {
	if fam == ipv4 {
		return ip4(ip)
	}
	return ip6(ip)
}

// pad4 pads a concatenation component to the 4-byte register size.
func pad4(b []byte) []byte {
	if r := len(b) % 4; r != 0 {
		b = append(b, make([]byte, 4-r)...)
	}
	return b
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, pad4(append([]byte(nil), p...))...)
	}
	return out
}

func meta(key expr.MetaKey, reg uint32) *expr.Meta { return &expr.Meta{Key: key, Register: reg} }

func cmp(op expr.CmpOp, reg uint32, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: reg, Data: data}
}

func load(base expr.PayloadBase, off, n, reg uint32) *expr.Payload {
	return &expr.Payload{OperationType: expr.PayloadLoad, Base: base, Offset: off, Len: n, DestRegister: reg}
}

func nh(off, n, reg uint32) *expr.Payload { return load(expr.PayloadBaseNetworkHeader, off, n, reg) }
func ll(off, n, reg uint32) *expr.Payload { return load(expr.PayloadBaseLLHeader, off, n, reg) }

// nfproto matches the packet's address family in the inet family.
func nfproto(fam family) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if fam == ipv6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{meta(expr.MetaKeyNFPROTO, reg1), cmp(expr.CmpOpEq, reg1, []byte{p})}
}

// saddr/daddr load an address into reg.
func saddr(fam family, reg uint32) *expr.Payload {
	if fam == ipv4 {
		return nh(12, 4, reg)
	}
	return nh(8, 16, reg)
}

func daddr(fam family, reg uint32) *expr.Payload {
	if fam == ipv4 {
		return nh(16, 4, reg)
	}
	return nh(24, 16, reg)
}

// regsFor is the number of 4-byte registers an address occupies.
func regsFor(fam family) uint32 {
	if fam == ipv4 {
		return 1
	}
	return 4
}

func lookup(set string, reg uint32, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg, SetName: set, Invert: invert}
}

func verdict(k expr.VerdictKind) *expr.Verdict          { return &expr.Verdict{Kind: k} }
func jumpTo(k expr.VerdictKind, c string) *expr.Verdict { return &expr.Verdict{Kind: k, Chain: c} }

// ctDNAT matches connections whose destination was translated.
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		cmp(expr.CmpOpNeq, reg1, make([]byte, 4)),
	}
}

// fibDaddrLocal matches packets addressed to the host itself.
func fibDaddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		cmp(expr.CmpOpEq, reg1, binaryutil.NativeEndian.PutUint32(rtnLocal)),
	}
}

// etherType matches the EtherType of a bridged frame.
func etherType(t uint16) []expr.Any {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, t)
	return []expr.Any{ll(12, 2, reg1), cmp(expr.CmpOpEq, reg1, b)}
}

func comment(s string) []byte {
	return userdata.AppendString(nil, userdata.Type(0) /* NFTNL_UDATA_RULE_COMMENT */, s)
}
