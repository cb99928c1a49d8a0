package firewall

import (
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Anti-spoofing sets, one of each in the bridge table (bridge mode) and in
// the inet table (routed mode). Every key starts with the host port's
// name, which is derived from the attachment's identity, so an element
// belongs to exactly one attachment.
const (
	setGuarded = "guarded" // ifname: ports under anti-spoofing (comment: owner)
	setGMAC    = "gmac"    // ifname . ether_addr: the MAC the port may send from
	setGIP4    = "gip4"    // ifname . ipv4_addr: IPv4 (and ARP) source addresses
	setGIP6    = "gip6"    // ifname . ipv6_addr: IPv6 sources, EUI-64 link-local included
	setNoMAC   = "nomac"   // ifname: ports whose MAC is unknown (no MAC checks, fe80::/10 allowed)
)

var guardSets = []string{setGuarded, setGMAC, setGIP4, setGIP6, setNoMAC}

// guardTable is where an attachment's anti-spoof elements live: bridged
// frames are seen by the bridge family, routed packets by inet.
func guardTable(n Network) *nftables.Table {
	if n.Bridge != "" {
		return brTable
	}
	return inetTable
}

// guardSpec is what one attachment may send from: the elements it owns in
// the guard sets. Its g- chain records it as rule comments (rules without
// expressions, so no jump leads there and a commit never validates them).
type guardSpec struct {
	hostIf string
	owner  string
	mac    net.HardwareAddr // nil: MAC unknown
	ips    []net.IP         // 4-byte IPv4, 16-byte IPv6
}

func specOf(a *Attachment, owner string) guardSpec {
	g := guardSpec{hostIf: a.HostIf, owner: owner, mac: a.MAC}
	for _, n := range a.IPs {
		if ip4 := n.IP.To4(); ip4 != nil {
			g.ips = append(g.ips, ip4)
		} else {
			g.ips = append(g.ips, n.IP.To16())
		}
	}
	if len(a.MAC) == 6 {
		g.ips = append(g.ips, linkLocal(a.MAC))
	} else {
		g.mac = nil
	}
	return g
}

// record is the g- chain's rule comments: "nswire guard <hostIf> <owner>",
// then "mac <mac>" or "nomac", then "ip <addr>" per address.
func (g guardSpec) record() []string {
	out := []string{"nswire guard " + g.hostIf + " " + g.owner}
	if g.mac != nil {
		out = append(out, "mac "+g.mac.String())
	} else {
		out = append(out, "nomac")
	}
	for _, ip := range g.ips {
		out = append(out, "ip "+ip.String())
	}
	return out
}

// parseGuardRecord reads a g- chain's comments back; ok is false without
// the first line.
func parseGuardRecord(comments []string) (g guardSpec, ok bool) {
	if len(comments) == 0 {
		return g, false
	}
	f := strings.Fields(comments[0])
	if len(f) != 4 || f[0] != "nswire" || f[1] != "guard" {
		return g, false
	}
	g.hostIf, g.owner = f[2], f[3]
	for _, c := range comments[1:] {
		kind, v, _ := strings.Cut(c, " ")
		switch kind {
		case "mac":
			g.mac, _ = net.ParseMAC(v)
		case "ip":
			if ip := net.ParseIP(v); ip != nil && !ip.IsUnspecified() {
				if ip4 := ip.To4(); ip4 != nil {
					ip = ip4
				}
				g.ips = append(g.ips, ip)
			}
		}
	}
	return g, true
}

// element is one key of one guard set.
type element struct {
	set     string
	key     []byte
	comment string
}

// elems are the guard set elements of g.
func (g guardSpec) elems() []element {
	h := ifname(g.hostIf)
	out := []element{{setGuarded, h, g.owner}}
	if g.mac != nil {
		out = append(out, element{set: setGMAC, key: concat(h, g.mac)})
	} else {
		out = append(out, element{set: setNoMAC, key: h})
	}
	for _, ip := range g.ips {
		set := setGIP6
		if len(ip) == 4 {
			set = setGIP4
		}
		out = append(out, element{set: set, key: concat(h, ip)})
	}
	return out
}

// queueGuard writes the attachment's record chain and its guard elements.
func queueGuard(tx *txn, a *Attachment, nm names) {
	t := guardTable(a.Net)
	g := specOf(a, nm.owner)
	tx.addChain(t, nm.guard)
	tx.flushChain(t, nm.guard)
	for _, r := range g.record() {
		tx.addRecord(t, nm.guard, r)
	}
	for _, e := range g.elems() {
		tx.addElems(t, e.set, setElem{key: e.key, comment: e.comment})
	}
	if a.Net.Bridge != "" && !a.Net.ICC {
		tx.addElems(brTable, setNoICCBr, setElem{key: ifname(a.HostIf), comment: nm.owner})
	}
}

// queueUnguard removes g's elements from table t, and the port's icc=false
// element in the bridge table. Each element is added, then deleted: the
// pair commits whether or not the element was there, so DEL needs no
// GET per element and converges when a previous DEL half ran.
func queueUnguard(tx *txn, t *nftables.Table, g guardSpec) {
	els := g.elems()
	if t == brTable {
		els = append(els, element{set: setNoICCBr, key: ifname(g.hostIf)})
	}
	for _, e := range els {
		tx.addElems(t, e.set, setElem{key: e.key})
		tx.delElems(t, e.set, setElem{key: e.key})
	}
}

// guardBase is the anti-spoofing part of the base chain (bridge guard-pre,
// inet raw-pre). Frames from a guarded port must carry its MAC (unless
// unknown); IPv4 and ARP must use one of its IPv4 addresses (ARP also
// 0.0.0.0, and the ARP sender MAC must be its MAC); IPv6 one of its
// addresses, the link-local address of its MAC, or :: (DAD, MLD).
// Anything else from a guarded port is dropped, VLAN-tagged frames
// included.
func guardBase(bridge bool) [][]expr.Any {
	proto := func(fam family) []expr.Any {
		if !bridge {
			return nfproto(fam)
		}
		if fam == ipv4 {
			return etherType(unix.ETH_P_IP)
		}
		return etherType(unix.ETH_P_IPV6)
	}
	port := meta(expr.MetaKeyIIFNAME, reg32)
	drop, ret := verdict(expr.VerdictDrop), verdict(expr.VerdictReturn)
	macChecked := []expr.Any{port, lookup(setNoMAC, reg32, true)}
	rules := [][]expr.Any{
		{port, lookup(setGuarded, reg32, true), ret},
		cat(macChecked, []expr.Any{ll(6, 6, reg32+4), lookup(setGMAC, reg32, true), drop}),
	}
	if bridge {
		arp := etherType(unix.ETH_P_ARP)
		rules = append(rules,
			cat(arp, macChecked, []expr.Any{nh(8, 6, reg32+4), lookup(setGMAC, reg32, true), drop}),
			cat(arp, []expr.Any{nh(14, 4, reg1), cmp(expr.CmpOpEq, reg1, net.IPv4zero.To4()), ret}),
			cat(arp, []expr.Any{port, nh(14, 4, reg32+4), lookup(setGIP4, reg32, false), ret}))
	}
	return append(rules,
		cat(proto(ipv4), []expr.Any{port, saddr(ipv4, reg32+4), lookup(setGIP4, reg32, false), ret}),
		cat(proto(ipv6), []expr.Any{saddr(ipv6, reg1), cmp(expr.CmpOpEq, reg1, net.IPv6unspecified), ret}),
		cat(proto(ipv6), []expr.Any{port, saddr(ipv6, reg32+4), lookup(setGIP6, reg32, false), ret}),
		cat(proto(ipv6), []expr.Any{port, lookup(setNoMAC, reg32, false), nh(8, 2, reg1),
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
			cmp(expr.CmpOpEq, reg1, []byte{0xfe, 0x80}), ret}),
		[]expr.Any{drop})
}

// linkLocal is the EUI-64 IPv6 link-local address the kernel derives from
// a MAC (addr_gen_mode 0).
func linkLocal(mac net.HardwareAddr) net.IP {
	ip := make(net.IP, 16)
	ip[0], ip[1] = 0xfe, 0x80
	copy(ip[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return ip
}
