package firewall

import (
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of nswire's tables (one inet, one bridge).
const TableName = "nswire"

// Hook priorities. See doc.go for why each one is where it is.
const (
	PrioRaw         = -300 // inet prerouting: before conntrack (-200)
	PrioDstNAT      = -100 // inet nat prerouting/output: NF_IP_PRI_NAT_DST
	PrioForward     = -10  // inet forward: just before iptables(-nft) filter (0)
	PrioSrcNAT      = 100  // inet nat postrouting: NF_IP_PRI_NAT_SRC
	PrioBridgeGuard = -300 // bridge prerouting: before bridge filter (-200)
	PrioBridgeFwd   = -200 // bridge forward: NF_BR_PRI_FILTER_BRIDGED
)

// Set and chain names.
const (
	setNoICCBr  = "noicc" // bridge table: host ports of attachments with icc=false
	chainPorts  = "ports"
	attPrefix   = "a-" // per-attachment published ports record: a-<net8>-<att16>
	guardPrefix = "g-" // per-attachment anti-spoof chain: g-<net8>-<att16>
)

// dnatSet names the DNAT data map of a family, for one host address or
// ("any") every host address.
func dnatSet(fam family, wildcard bool) string { return famSet("dnat", fam, wildcard) }

func famSet(base string, fam family, wildcard bool) string {
	s := sN(base, fam)
	if wildcard {
		s += "any"
	}
	return s
}

// Network-level interval sets, one per family: sN(fam) is "nets4" etc.
const (
	nsNets     = "nets"     // every subnet of every nswire network
	nsIso      = "iso"      // subnets of isolated networks
	nsMasq     = "masq"     // subnets masqueraded when leaving
	nsInternal = "internal" // subnets of internal networks
	nsIntra    = "intra"    // pairs (a . b) of subnets of one network
	nsNoICC    = "noicc"    // pairs of subnets of networks with icc=false
	nsNoMasq   = "nomasq"   // pairs (subnet . destination) never masqueraded
)

func sN(base string, fam family) string {
	if fam == ipv4 {
		return base + "4"
	}
	return base + "6"
}

var (
	inetTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	brTable   = &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
)

func addrType(fam family) nftables.SetDatatype {
	if fam == ipv4 {
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

// setDef returns the definition of a named set; the same value is used to
// create it and to add or delete elements.
func setDef(t *nftables.Table, name string) *nftables.Set {
	portAnd := func(typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, typ)}
	}
	switch name {
	case setGuarded, setNoMAC, setNoICCBr:
		// Host byte order, as nft declares string keys: `nft list` then
		// shows the names instead of reading them backwards.
		return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	case setGMAC:
		return portAnd(nftables.TypeEtherAddr)
	case setGIP4:
		return portAnd(nftables.TypeIPAddr)
	case setGIP6:
		return portAnd(nftables.TypeIP6Addr)
	case "dnat4", "dnat6", "dnat4any", "dnat6any":
		return dnatDef(t, name)
	}
	fam := ipv4
	if name[len(name)-1] == '6' {
		fam = ipv6
	}
	switch name[:len(name)-1] {
	case nsIntra, nsNoICC, nsNoMasq:
		return &nftables.Set{Table: t, Name: name, Interval: true, Concatenation: true,
			KeyType: nftables.MustConcatSetType(addrType(fam), addrType(fam))}
	default:
		return &nftables.Set{Table: t, Name: name, Interval: true, KeyType: addrType(fam)}
	}
}

// dnatDef is a DNAT data map: (host address .) protocol . port to
// container address . port. Elements are added exclusively (see exclusive).
func dnatDef(t *nftables.Table, name string) *nftables.Set {
	fam, wildcard := ipv4, len(name) > 5
	if name[4] == '6' {
		fam = ipv6
	}
	key := []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeInetService}
	if !wildcard {
		key = append([]nftables.SetDatatype{addrType(fam)}, key...)
	}
	return &nftables.Set{Table: t, Name: name, IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(key...),
		DataType: nftables.MustConcatSetType(addrType(fam), nftables.TypeInetService)}
}

func inetSetNames() []string {
	names := append([]string{"dnat4", "dnat4any", "dnat6", "dnat6any"}, guardSets...)
	for _, fam := range families {
		for _, b := range []string{nsNets, nsIso, nsMasq, nsInternal, nsIntra, nsNoICC, nsNoMasq} {
			names = append(names, sN(b, fam))
		}
	}
	return names
}

func baseChain(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio int32) *nftables.Chain {
	return &nftables.Chain{Table: t, Name: name, Type: typ, Hooknum: hook,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio))}
}

// setNames lists the named sets of a table.
func setNames(t *nftables.Table) []string {
	if t == brTable {
		return append([]string{setNoICCBr}, guardSets...)
	}
	return inetSetNames()
}

// addSkeleton queues table t as this layout makes it: the table (created
// exclusively, see rebuild), its sets, its base chains with their rules
// and the layout stamp.
func addSkeleton(c *nftables.Conn, t *nftables.Table) error {
	c.CreateTable(t)
	for i, n := range setNames(t) {
		s := setDef(t, n)
		s.ID = uint32(1000 + i)
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	for _, cr := range skeletonChains() {
		if cr.ch.Table != t {
			continue
		}
		c.AddChain(cr.ch)
		for _, r := range cr.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: cr.ch, Exprs: r})
		}
	}
	if t == inetTable {
		c.AddChain(&nftables.Chain{Table: t, Name: chainNetworks})
	}
	stamp := c.AddChain(&nftables.Chain{Table: t, Name: stampChain})
	c.AddRule(&nftables.Rule{Table: t, Chain: stamp, UserData: comment(stampNote)})
	return nil
}

type chainRules struct {
	ch    *nftables.Chain
	rules [][]expr.Any
}

// skeletonChains lists the static chains in creation order (a chain must
// exist before a rule jumps to it) with their rules.
func skeletonChains() []chainRules {
	var chains []chainRules
	put := func(ch *nftables.Chain, rules ...[]expr.Any) { chains = append(chains, chainRules{ch, rules}) }
	filter, nat := nftables.ChainTypeFilter, nftables.ChainTypeNAT

	// inet raw prerouting: CVE-2020-8558 guard and routed-mode anti-spoof.
	raw := baseChain(inetTable, "raw-pre", filter, nftables.ChainHookPrerouting, PrioRaw)
	put(raw, append([][]expr.Any{
		cat([]expr.Any{meta(expr.MetaKeyIIFNAME, reg1), cmp(expr.CmpOpNeq, reg1, ifname("lo"))},
			nfproto(ipv4), []expr.Any{nh(16, 1, reg1), cmp(expr.CmpOpEq, reg1, []byte{127}), verdict(expr.VerdictDrop)}),
	}, guardBase(false)...)...)

	// DNAT of published ports, for packets from outside and from the host.
	toPorts := cat(fibDaddrLocal(), []expr.Any{jumpTo(expr.VerdictGoto, chainPorts)})
	var ports [][]expr.Any
	for _, fam := range families {
		ports = append(ports, portsRule(fam, false), portsRule(fam, true))
	}
	put(&nftables.Chain{Table: inetTable, Name: chainPorts}, ports...)
	put(baseChain(inetTable, "nat-pre", nat, nftables.ChainHookPrerouting, PrioDstNAT), toPorts)
	put(baseChain(inetTable, "nat-out", nat, nftables.ChainHookOutput, PrioDstNAT), toPorts)

	// forward: isolation, internal networks, icc=false in routed mode.
	fwd := [][]expr.Any{cat(ctDNAT(), []expr.Any{verdict(expr.VerdictAccept)})}
	for _, fam := range families {
		pair := []expr.Any{saddr(fam, reg32), daddr(fam, reg32+regsFor(fam))}
		fwd = append(fwd,
			cat(nfproto(fam), pair, []expr.Any{lookup(sN(nsNoICC, fam), reg32, false), verdict(expr.VerdictDrop)}),
			cat(nfproto(fam), pair, []expr.Any{lookup(sN(nsIntra, fam), reg32, false), verdict(expr.VerdictAccept)}),
			cat(nfproto(fam), []expr.Any{saddr(fam, reg1), lookup(sN(nsInternal, fam), reg1, false), verdict(expr.VerdictDrop)}),
			cat(nfproto(fam), []expr.Any{daddr(fam, reg1), lookup(sN(nsInternal, fam), reg1, false), verdict(expr.VerdictDrop)}),
			cat(nfproto(fam), []expr.Any{saddr(fam, reg1), lookup(sN(nsIso, fam), reg1, false),
				daddr(fam, reg1), lookup(sN(nsNets, fam), reg1, false), verdict(expr.VerdictDrop)}),
			cat(nfproto(fam), []expr.Any{daddr(fam, reg1), lookup(sN(nsIso, fam), reg1, false),
				saddr(fam, reg1), lookup(sN(nsNets, fam), reg1, false), verdict(expr.VerdictDrop)}),
		)
	}
	put(baseChain(inetTable, "forward", filter, nftables.ChainHookForward, PrioForward), fwd...)

	// postrouting: localhost->container, hairpin, then ipMasq.
	post := [][]expr.Any{cat(ctDNAT(), nfproto(ipv4), []expr.Any{nh(12, 1, reg1), cmp(expr.CmpOpEq, reg1, []byte{127}),
		daddr(ipv4, reg1), lookup(sN(nsNets, ipv4), reg1, false), &expr.Masq{}})}
	for _, fam := range families {
		pair := []expr.Any{saddr(fam, reg32), daddr(fam, reg32+regsFor(fam))}
		post = append(post,
			cat(ctDNAT(), nfproto(fam), pair, []expr.Any{lookup(sN(nsIntra, fam), reg32, false), &expr.Masq{}}),
			cat(nfproto(fam), []expr.Any{saddr(fam, reg1), lookup(sN(nsMasq, fam), reg1, false)},
				pair, []expr.Any{lookup(sN(nsIntra, fam), reg32, true), lookup(sN(nsNoMasq, fam), reg32, true), &expr.Masq{}}))
	}
	put(baseChain(inetTable, "nat-post", nat, nftables.ChainHookPostrouting, PrioSrcNAT), post...)

	// bridge family: anti-spoof on frames entering from container ports and
	// icc=false between ports of one bridge (no br_netfilter needed).
	put(baseChain(brTable, "guard-pre", filter, nftables.ChainHookPrerouting, PrioBridgeGuard), guardBase(true)...)
	// icc=false: drop frames bridged from the port of such an attachment to
	// another port. With br_netfilter loaded, a DNATed hairpin to another
	// container of the bridge is bridged after the translation; it is the
	// only bridged frame whose packet type is "host" (it was addressed to
	// the bridge), so it passes. (No conntrack and no meta ibrname in the
	// bridge family on kernels without nf_conntrack_bridge/nft_meta_bridge.)
	put(baseChain(brTable, "forward", filter, nftables.ChainHookForward, PrioBridgeFwd),
		[]expr.Any{meta(expr.MetaKeyIIFNAME, reg1), lookup(setNoICCBr, reg1, false),
			meta(expr.MetaKeyPKTTYPE, reg1), cmp(expr.CmpOpNeq, reg1, []byte{unix.PACKET_HOST}), verdict(expr.VerdictDrop)})
	return chains
}

// portsRule is one rule of the chain "ports": it loads the key of a
// family's map for one host address or any, then looks it up.
func portsRule(fam family, wildcard bool) []expr.Any {
	var key []expr.Any
	n := uint32(0)
	if !wildcard {
		key, n = []expr.Any{daddr(fam, reg32)}, regsFor(fam)
	}
	key = append(key, meta(expr.MetaKeyL4PROTO, reg32+n), load(expr.PayloadBaseTransportHeader, 2, 2, reg32+n+1))
	return cat(nfproto(fam), key, portLookup(fam, wildcard))
}

// portLookup ends a ports rule whose key is in reg32: a DNAT data map
// lookup and the translation to its datum.
func portLookup(fam family, wildcard bool) []expr.Any {
	natFam := uint32(unix.NFPROTO_IPV4)
	if fam == ipv6 {
		natFam = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg32, SetName: dnatSet(fam, wildcard), DestRegister: reg1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFam, RegAddrMin: reg1, RegProtoMin: reg32 + regsFor(fam), Specified: true},
	}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// skeletonChain is a chain of the layout and its use count as the layout
// makes it: its rules plus the jumps and gotos to it.
type skeletonChain struct {
	name string
	use  uint32
}

// skeletonUse lists, per table, the chains of skeletonChains in creation
// order with their use counts: what the layout probes (layout.go) and
// CHECK expect of a table.
var skeletonUse = sync.OnceValue(func() map[*nftables.Table][]skeletonChain {
	out := map[*nftables.Table][]skeletonChain{}
	chains := skeletonChains()
	for _, cr := range chains {
		out[cr.ch.Table] = append(out[cr.ch.Table], skeletonChain{cr.ch.Name, uint32(len(cr.rules))})
	}
	for _, cr := range chains {
		for _, r := range cr.rules {
			for _, e := range r {
				v, ok := e.(*expr.Verdict)
				if !ok || v.Chain == "" {
					continue
				}
				for i := range out[cr.ch.Table] {
					if out[cr.ch.Table][i].name == v.Chain {
						out[cr.ch.Table][i].use++
					}
				}
			}
		}
	}
	return out
})
