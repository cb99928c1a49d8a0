package firewall

import (
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
	setGuard    = "guard" // ifname : verdict, the layout before the guard sets (see guardBase)
	setNoICCBr  = "noicc" // bridge table: host ports of attachments with icc=false
	chainPorts  = "ports"
	attPrefix   = "a-" // per-attachment published ports record: a-<net8>-<att16>
	guardPrefix = "g-" // per-attachment anti-spoof chain: g-<net8>-<att16>
)

// dnatSet names the DNAT data map of a family, for one host address or
// ("any") every host address.
func dnatSet(fam int, any bool) string { return famSet("dnat", fam, any) }

// legacyPortsSet names the verdict maps of the layout before the DNAT data
// maps, whose elements go to a- chains holding the DNAT rules.
func legacyPortsSet(fam int, any bool) string { return famSet("ports", fam, any) }

func famSet(base string, fam int, any bool) string {
	s := sN(base, fam)
	if any {
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

func sN(base string, fam int) string {
	if fam == 4 {
		return base + "4"
	}
	return base + "6"
}

var (
	inetTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	brTable   = &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
)

func addrType(fam int) nftables.SetDatatype {
	if fam == 4 {
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

// setDef returns the definition of a named set; the same value is used to
// create it and to add or delete elements.
func setDef(t *nftables.Table, name string) *nftables.Set {
	vm := func(key nftables.SetDatatype, concat bool) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: key,
			DataType: nftables.TypeVerdict, Concatenation: concat}
	}
	portAnd := func(typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, typ)}
	}
	switch name {
	case setGuard:
		return vm(nftables.TypeIFName, false)
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
	case "ports4", "ports6":
		fam := 4
		if name == "ports6" {
			fam = 6
		}
		return vm(nftables.MustConcatSetType(addrType(fam), nftables.TypeInetProto, nftables.TypeInetService), true)
	case "ports4any", "ports6any":
		return vm(nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService), true)
	case "dnat4", "dnat6", "dnat4any", "dnat6any":
		return dnatDef(t, name)
	}
	fam := 4
	if name[len(name)-1] == '6' {
		fam = 6
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
	fam, any := 4, len(name) > 5
	if name[4] == '6' {
		fam = 6
	}
	key := []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeInetService}
	if !any {
		key = append([]nftables.SetDatatype{addrType(fam)}, key...)
	}
	return &nftables.Set{Table: t, Name: name, IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(key...),
		DataType: nftables.MustConcatSetType(addrType(fam), nftables.TypeInetService)}
}

func inetSetNames() []string {
	names := append([]string{setGuard, "ports4", "ports4any", "ports6", "ports6any",
		"dnat4", "dnat4any", "dnat6", "dnat6any"}, guardSets...)
	for _, fam := range []int{4, 6} {
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

// addSkeleton queues the tables, sets, base chains and static rules. It is
// idempotent and safe against concurrent runs: everything is added without
// NLM_F_EXCL and every static chain is flushed and refilled in the same
// transaction, so whichever batch commits last leaves exactly one copy.
// Set elements are never touched.
func addSkeleton(c *nftables.Conn) error {
	c.AddTable(inetTable)
	c.AddTable(brTable)
	for i, n := range inetSetNames() {
		s := setDef(inetTable, n)
		s.ID = uint32(1000 + i)
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	for i, n := range append([]string{setGuard, setNoICCBr}, guardSets...) {
		s := setDef(brTable, n)
		s.ID = uint32(1100 + i)
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}

	for _, cr := range skeletonChains() {
		c.AddChain(cr.ch)
		c.FlushChain(cr.ch)
		for _, r := range cr.rules {
			c.AddRule(&nftables.Rule{Table: cr.ch.Table, Chain: cr.ch, Exprs: r})
		}
	}
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
			nfproto(4), []expr.Any{nh(16, 1, reg1), cmp(expr.CmpOpEq, reg1, []byte{127}), verdict(expr.VerdictDrop)}),
	}, guardBase(false)...)...)

	// DNAT of published ports, for packets from outside and from the host:
	// through the data maps, then through the verdict maps of the layout
	// before them (elements a binary of that layout may still add).
	toPorts := cat(fibDaddrLocal(), []expr.Any{jumpTo(expr.VerdictGoto, chainPorts)})
	var ports [][]expr.Any
	for _, legacy := range []bool{false, true} {
		for _, fam := range []int{4, 6} {
			ports = append(ports, portsRule(fam, false, legacy), portsRule(fam, true, legacy))
		}
	}
	put(&nftables.Chain{Table: inetTable, Name: chainPorts}, ports...)
	put(baseChain(inetTable, "nat-pre", nat, nftables.ChainHookPrerouting, PrioDstNAT), toPorts)
	put(baseChain(inetTable, "nat-out", nat, nftables.ChainHookOutput, PrioDstNAT), toPorts)

	// forward: isolation, internal networks, icc=false in routed mode.
	fwd := [][]expr.Any{cat(ctDNAT(), []expr.Any{verdict(expr.VerdictAccept)})}
	for _, fam := range []int{4, 6} {
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
	post := [][]expr.Any{cat(ctDNAT(), nfproto(4), []expr.Any{nh(12, 1, reg1), cmp(expr.CmpOpEq, reg1, []byte{127}),
		daddr(4, reg1), lookup(sN(nsNets, 4), reg1, false), &expr.Masq{}})}
	for _, fam := range []int{4, 6} {
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
func portsRule(fam int, any, legacy bool) []expr.Any {
	var key []expr.Any
	n := uint32(0)
	if !any {
		key, n = []expr.Any{daddr(fam, reg32)}, regsFor(fam)
	}
	key = append(key, meta(expr.MetaKeyL4PROTO, reg32+n), load(expr.PayloadBaseTransportHeader, 2, 2, reg32+n+1))
	return cat(nfproto(fam), key, portLookup(fam, any, legacy))
}

// portLookup ends a ports rule whose key is in reg32: a DNAT data map
// lookup and the translation to its datum, or a legacy verdict map.
func portLookup(fam int, any, legacy bool) []expr.Any {
	if legacy {
		return []expr.Any{vmap(legacyPortsSet(fam, any), reg32)}
	}
	natFam := uint32(unix.NFPROTO_IPV4)
	if fam == 6 {
		natFam = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg32, SetName: dnatSet(fam, any), DestRegister: reg1, IsDestRegSet: true},
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

// baseChainNames lists the static chains Check expects to exist.
var baseChainNames = map[*nftables.Table][]string{
	inetTable: {"raw-pre", "nat-pre", "nat-out", chainPorts, "forward", "nat-post"},
	brTable:   {"guard-pre", "forward"},
}
