package firewall

import (
	"net"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guardTable is where an attachment's anti-spoof chain lives: bridged
// frames are seen by the bridge family, routed packets by inet.
func guardTable(n Network) *nftables.Table {
	if n.Bridge != "" {
		return brTable
	}
	return inetTable
}

type guardRule struct {
	exprs   []expr.Any
	comment string
}

// guardRules is the anti-spoof chain of an attachment: frames from the
// container's port must carry its MAC and, for IPv4, IPv6 and ARP, one of
// its addresses (plus the IPv6 link-local address derived from the MAC and
// the unspecified address used by DAD and MLD). Anything else is dropped.
func guardRules(a *Attachment) []guardRule {
	bridge := a.Net.Bridge != ""
	proto := func(fam int) []expr.Any {
		if !bridge {
			return nfproto(fam)
		}
		if fam == 4 {
			return etherType(unix.ETH_P_IP)
		}
		return etherType(unix.ETH_P_IPV6)
	}
	nm := namesOf(a.Net.Name, a.ContainerID, a.IfName)
	rules := []guardRule{{
		// Record: no-op match naming the host interface, read back by DEL.
		exprs:   []expr.Any{meta(expr.MetaKeyIIFNAME, reg1), cmp(expr.CmpOpEq, reg1, ifname(a.HostIf))},
		comment: "nswire guard " + a.HostIf + " " + nm.owner,
	}}
	drop := verdict(expr.VerdictDrop)
	ret := verdict(expr.VerdictReturn)
	if a.MAC != nil {
		rules = append(rules, guardRule{cat([]expr.Any{ll(6, 6, reg1), cmp(expr.CmpOpNeq, reg1, a.MAC), drop}), "mac " + a.MAC.String()})
	}
	var v4, v6 []net.IP
	for _, n := range a.IPs {
		if famOf(n.IP) == 4 {
			v4 = append(v4, n.IP.To4())
		} else {
			v6 = append(v6, n.IP.To16())
		}
	}
	if bridge {
		arp := etherType(unix.ETH_P_ARP)
		if a.MAC != nil {
			rules = append(rules, guardRule{cat(arp, []expr.Any{nh(8, 6, reg1), cmp(expr.CmpOpNeq, reg1, a.MAC), drop}), "arp-mac " + a.MAC.String()})
		}
		for _, ip := range append(slices.Clone(v4), net.IPv4zero.To4()) {
			rules = append(rules, guardRule{cat(arp, []expr.Any{nh(14, 4, reg1), cmp(expr.CmpOpEq, reg1, ip), ret}), "arp " + ip.String()})
		}
	}
	for _, ip := range v4 {
		rules = append(rules, guardRule{cat(proto(4), []expr.Any{saddr(4, reg1), cmp(expr.CmpOpEq, reg1, ip), ret}), "ip " + ip.String()})
	}
	v6 = append(v6, net.IPv6unspecified)
	if a.MAC != nil && len(a.MAC) == 6 {
		v6 = append(v6, linkLocal(a.MAC))
		for _, ip := range v6 {
			rules = append(rules, guardRule{cat(proto(6), []expr.Any{saddr(6, reg1), cmp(expr.CmpOpEq, reg1, ip.To16()), ret}), "ip " + ip.String()})
		}
	} else {
		for _, ip := range v6 {
			rules = append(rules, guardRule{cat(proto(6), []expr.Any{saddr(6, reg1), cmp(expr.CmpOpEq, reg1, ip.To16()), ret}), "ip " + ip.String()})
		}
		// Without a MAC the link-local address is unknown: allow fe80::/10.
		rules = append(rules, guardRule{cat(proto(6), []expr.Any{nh(8, 2, reg1),
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
			cmp(expr.CmpOpEq, reg1, []byte{0xfe, 0x80}), ret}), "ip fe80::/10"})
	}
	return append(rules, guardRule{[]expr.Any{drop}, "drop"})
}

// linkLocal is the EUI-64 IPv6 link-local address the kernel derives from
// a MAC (addr_gen_mode 0).
func linkLocal(mac net.HardwareAddr) net.IP {
	ip := make(net.IP, 16)
	ip[0], ip[1] = 0xfe, 0x80
	copy(ip[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return ip
}

func queueGuard(c *nftables.Conn, a *Attachment, nm names) error {
	t := guardTable(a.Net)
	ch := &nftables.Chain{Table: t, Name: nm.guard}
	c.AddChain(ch)
	c.FlushChain(ch)
	for _, r := range guardRules(a) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs, UserData: comment(r.comment)})
	}
	if err := c.SetAddElements(setDef(t, setGuard), []nftables.SetElement{{
		Key: ifname(a.HostIf), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: nm.guard}, Comment: nm.owner,
	}}); err != nil {
		return err
	}
	if a.Net.Bridge != "" && !a.Net.ICC {
		return c.SetAddElements(setDef(brTable, setNoICCBr), []nftables.SetElement{{Key: ifname(a.HostIf), Comment: nm.owner}})
	}
	return nil
}
