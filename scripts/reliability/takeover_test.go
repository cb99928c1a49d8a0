package reliability

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/testutil"
)

// takeoverVariant is what one round of TestCrashTakeover does; it depends
// on the round's index alone, so a round replays with the same shape.
type takeoverVariant struct {
	routed bool // B in routed mode (A is always a bridge network)
	wider  bool // B's subnet is 10.93.0.0/16, else equal to A's
	died   bool // A's containers die without DEL, else they are DELed
	aCount int  // A's containers (1 or 2)
	atVeth bool // kill B's ADD the instant its host veth appears
}

func takeoverVariantOf(i int) takeoverVariant {
	return takeoverVariant{
		wider:  i%2 == 1,
		routed: i%3 == 2,
		died:   (i/2)%2 == 0,
		aCount: 1 + (i/3)%2,
		atVeth: i%6 == 2 || i%6 == 3,
	}
}

func (v takeoverVariant) String() string {
	mode, sub, fate, kill := "bridge", "equal", "died", "random"
	if v.routed {
		mode = "routed"
	}
	if v.wider {
		sub = "wider"
	}
	if !v.died {
		fate = "deled"
	}
	if v.atVeth {
		kill = "atveth"
	}
	return fmt.Sprintf("%s-%s-A%d%s-%s", mode, sub, v.aCount, fate, kill)
}

// takeoverRun is what the rounds share: kill instants follow the recent
// duration of a take-over ADD, and statistics for the summary.
type takeoverRun struct {
	took     time.Duration // moving average of uninterrupted take-over ADDs
	kills    int
	finished int
	vethHits int
	phases   map[string]int
}

func (k *takeoverRun) note(d time.Duration) {
	if k.took > 0 {
		d = (3*k.took + d) / 4
	}
	k.took = d
}

// TestCrashTakeover SIGKILLs the ADD that takes a subnet over from a dead
// network (issue #17, pkg/plugin/owner.go). Each round, in a fresh host
// namespace: bridge network A (subnet S = 10.93.<round+1>.0/24) attaches
// one or two containers, which then die without DEL or are DELed, so A is
// dead but its records and bridge remain; network B (a bridge, or routed;
// subnet S or 10.93.0.0/16) ADDs a container and is SIGKILLed at a random
// instant within a take-over ADD's typical duration, or the instant B's
// host veth appears. The runtime's recovery follows: DEL of B's half-made
// attachment, then a retried ADD, which must succeed. Then: B works (host
// to container and back, CHECK), the host routes S through B, A's bridge
// is gone with its gateway, the records name B and not A, the firewall
// holds none of A's attachments and its subnet set only B's subnet, A's
// next ADD is refused with code 7 naming B, A's late DEL of its dead
// containers leaves B intact; after B's DEL, A takes S back, and the host
// ends holding nothing. Variants cycle with the round index; only the kill
// instant is random. NSWIRE_CRASHES scales the number of rounds as it does
// TestCrashAnywhere's kills (200 -> 12 rounds); NSWIRE_SEED replays.
func TestCrashTakeover(t *testing.T) {
	rounds := max(1, envInt("NSWIRE_CRASHES", 200)*12/200)
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("NSWIRE_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (NSWIRE_SEED to replay), %d rounds", seed, rounds)
	rng := rand.New(rand.NewPCG(seed, 17))

	k := &takeoverRun{phases: map[string]int{}}
	k.warmUp(t)
	t.Logf("typical take-over ADD after warm-up: %v", k.took)

	start := time.Now()
	for i := range rounds {
		v := takeoverVariantOf(i)
		frac := rng.Float64() // drawn every round, so a seed replays each round's instant
		t.Run(fmt.Sprintf("%02d-%s", i, v), func(t *testing.T) { k.round(t, i, v, frac) })
	}
	var ph []string
	for p, n := range k.phases {
		ph = append(ph, fmt.Sprintf("%s=%d", p, n))
	}
	sort.Strings(ph)
	t.Logf("%d rounds in %v: %d kills (%d at B's veth), %d ADDs finished before the kill; state at the kill: %s",
		rounds, time.Since(start).Round(time.Millisecond), k.kills, k.vethHits, k.finished, strings.Join(ph, ", "))
}

// warmUp measures uninterrupted take-overs: each network in turn takes
// 10.93.250.0/24 from the previous one, dead after its DEL.
func (k *takeoverRun) warmUp(t *testing.T) {
	r := newRig(t)
	var nets []*network
	reg := &registry{}
	r.tidy(func() []*network { return nets }, reg)
	for i := range 6 {
		n := r.newNetwork(i%3 == 2, "10.93.250.0/24")
		nets = append(nets, n)
		a := &att{net: n, id: fmt.Sprintf("warm%d", i), ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
		reg.put(a)
		begin := time.Now()
		if err := r.add(a); err != nil {
			t.Fatalf("warm-up take-over %d (%s): %v", i, n.name, err)
		}
		if i > 0 { // the first ADD builds the tables
			k.note(time.Since(begin))
		}
		r.mustDel(a)
		reg.drop(a)
	}
}

// takeoverRound is one round's rig and networks.
type takeoverRound struct {
	t          *testing.T
	r          *rig
	v          takeoverVariant
	a, b       *network
	s, bSub    *net.IPNet
	nets       []*network
	reg        *registry
	deadA      []*att // A's containers that died without DEL
	killReport string
}

func (k *takeoverRun) round(t *testing.T, i int, v takeoverVariant, frac float64) {
	r := newRig(t)
	x := &takeoverRound{t: t, r: r, v: v, reg: &registry{}}
	sCIDR, bCIDR := fmt.Sprintf("10.93.%d.0/24", i+1), fmt.Sprintf("10.93.%d.0/24", i+1)
	if v.wider {
		bCIDR = "10.93.0.0/16"
	}
	_, x.s, _ = net.ParseCIDR(sCIDR)
	_, x.bSub, _ = net.ParseCIDR(bCIDR)
	x.a = r.newNetwork(false, sCIDR)
	x.b = r.newNetwork(v.routed, bCIDR)
	x.nets = []*network{x.a, x.b}
	r.tidy(func() []*network { return x.nets }, x.reg)
	var tr *linkTrigger
	if v.atVeth {
		tr = &linkTrigger{}
		tr.watch(t, r.host.NS)
	}

	// 1. A attaches, then dies (without DEL, or DELed).
	x.deadNetworkA()

	// 2. B's ADD, SIGKILLed.
	b := &att{net: x.b, id: "b", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
	x.reg.put(b)
	p, err := r.start(r.addCall(b))
	if err != nil {
		t.Fatal(err)
	}
	delay := time.Duration(frac * float64(k.took))
	if v.atVeth {
		tr.arm(b.hostVeth(), p.cmd.Process)
		delay = 3 * k.took // fallback when the veth never appears
	}
	time.Sleep(delay)
	killed, opErr := p.kill()
	instant := delay.String()
	if v.atVeth {
		if tr.disarm() {
			instant = "at B's host veth"
			k.vethHits++
		} else if killed {
			instant = "at the fallback " + delay.String() + " (veth trigger missed)"
		}
	}
	phase := x.killPhase(b)
	switch {
	case killed:
		k.kills++
		k.phases[phase]++
	case opErr != nil:
		t.Errorf("B's ADD %s finished before the kill with an error: %v", b, opErr)
	default:
		k.finished++
		phase = "finished"
		k.phases[phase]++
	}
	x.killReport = fmt.Sprintf("B's ADD killed=%v %s; host then: %s", killed, instant, phase)
	t.Log(x.killReport)

	// 3. The runtime's recovery: DEL of the half-made attachment, retried ADD.
	if _, err := r.run(r.delCall(b)); err != nil {
		t.Fatalf("%s: recovery DEL of %s: %v", x.killReport, b, err)
	}
	if err := onlyLo(b.ns); err != nil {
		t.Errorf("%s: after the recovery DEL: %v", x.killReport, err)
	}
	x.noTraceOf(b, "after the recovery DEL")
	if err := r.add(b); err != nil {
		t.Fatalf("%s: retried ADD of %s: %v", x.killReport, b, err)
	}

	// 4. B owns S.
	x.assertOwnedByB(b, "after the retried ADD")
	x.assertOnlyDeadReservations(b)

	// A's next ADD is refused while B is live, and changes nothing.
	recs := x.records()
	refused := &att{net: x.a, id: "a-refused", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
	x.reg.put(refused)
	err = r.add(refused)
	var cniErr *types.Error
	switch {
	case err == nil:
		t.Errorf("%s: A's ADD succeeded while B is live", x.killReport)
	case !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig:
		t.Errorf("%s: A's ADD while B is live: want code %d, got %v", x.killReport, types.ErrInvalidNetworkConfig, err)
	case !strings.Contains(cniErr.Msg, strconv.Quote(x.b.name)):
		t.Errorf("%s: A's refusal does not name B (%q): %s", x.killReport, x.b.name, cniErr.Msg)
	}
	if err == nil {
		r.mustDel(refused)
	}
	x.reg.drop(refused)
	if err := onlyLo(refused.ns); err != nil {
		t.Errorf("%s: refused ADD: %v", x.killReport, err)
	}
	if got := x.records(); !slices.Equal(got, recs) {
		t.Errorf("%s: refused ADD changed the records from %q to %q", x.killReport, recs, got)
	}
	x.assertOwnedByB(b, "after A's refused ADD")

	// The runtime's late DEL of A's dead containers leaves B intact.
	for _, a := range x.deadA {
		r.mustDel(a)
		x.reg.drop(a)
	}
	x.deadA = nil
	r.assertExactly(x.nets, []*att{b})
	x.assertOwnedByB(b, "after A's late DELs")

	// B leaves; the host holds nothing of either network.
	r.mustDel(b)
	x.reg.drop(b)
	r.assertExactly(x.nets, nil)

	// A takes S back from dead B.
	back := &att{net: x.a, id: "a-back", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
	x.reg.put(back)
	begin := time.Now()
	if err := r.add(back); err != nil {
		t.Fatalf("%s: A's ADD after B's DEL: %v", x.killReport, err)
	}
	k.note(time.Since(begin))
	x.assertOwnedByA(back)
	r.mustDel(back)
	x.reg.drop(back)
	r.assertExactly(x.nets, nil)
}

// deadNetworkA attaches A's containers and ends them, then checks that A
// is dead with its records, bridge and gateway in place.
func (x *takeoverRound) deadNetworkA() {
	t, r := x.t, x.r
	var as []*att
	for j := range x.v.aCount {
		a := &att{net: x.a, id: fmt.Sprintf("a%d", j), ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
		r.mustAdd(a)
		x.reg.put(a)
		as = append(as, a)
	}
	if x.v.aCount == 2 {
		r.assertWorks(as[0], as[1])
	}
	for _, a := range as {
		if x.v.died {
			// A container's namespace going away destroys its veth pair.
			if err := a.ns.Handle().LinkDel(a.ns.Link(a.ifname)); err != nil {
				t.Fatal(err)
			}
			x.deadA = append(x.deadA, a)
		} else {
			r.mustDel(a)
			x.reg.drop(a)
		}
	}
	br, err := r.host.Handle().LinkByName(x.a.bridge)
	if err != nil {
		t.Fatalf("A's bridge %s: %v", x.a.bridge, err)
	}
	if ports := x.portsOf(br); len(ports) > 0 {
		t.Fatalf("dead A's bridge still has ports %v", ports)
	}
	if addrs := x.addrsIn(br, x.s); len(addrs) == 0 {
		t.Fatalf("dead A's bridge holds no gateway in %s", x.s)
	}
	if recs := x.records(); !x.recorded(recs, x.a) {
		t.Fatalf("dead A is not recorded: %q", recs)
	}
	// What dead containers leave until their DEL: everything but the veth.
	d, err := r.diff(x.nets, x.deadA)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range d {
		if !slices.ContainsFunc(x.deadA, func(a *att) bool { return line == "live link "+a.hostVeth()+" is gone" }) {
			t.Errorf("before B's ADD: %s", line)
		}
	}
}

// killPhase describes how far B's take-over had got when it died.
func (x *takeoverRound) killPhase(b *att) string {
	recs := x.records()
	recA, recB := x.recorded(recs, x.a), x.recorded(recs, x.b)
	brA := "A's bridge gone"
	if br, err := x.r.host.Handle().LinkByName(x.a.bridge); err == nil {
		brA = "A's bridge present"
		if len(x.addrsIn(br, x.s)) == 0 {
			brA = "A's bridge without gateway"
		}
	}
	chainsA := ""
	if len(x.deadA) > 0 && !slices.ContainsFunc(x.r.host.AttachmentChains(), func(c string) bool {
		return strings.Contains(c, "-"+ident.Hex(8, x.a.name)+"-")
	}) {
		chainsA = ", A's chains released"
	}
	veth := ""
	if _, err := x.r.host.Handle().LinkByName(b.hostVeth()); err == nil {
		veth = ", B's veth made"
	}
	rec := map[[2]bool]string{
		{true, false}: "records name A", {false, true}: "records name B",
		{true, true}: "records name A and B", {false, false}: "records name neither",
	}[[2]bool{recA, recB}]
	return rec + ", " + brA + chainsA + veth
}

// noTraceOf fails on anything of b left after its DEL.
func (x *takeoverRound) noTraceOf(b *att, when string) {
	d, err := x.r.diff(x.nets, nil)
	if err != nil {
		x.t.Fatal(err)
	}
	net8 := "-" + ident.Hex(8, b.net.name) + "-"
	for _, line := range d {
		if strings.Contains(line, b.net.name+"/") || strings.Contains(line, b.hostVeth()) || strings.Contains(line, net8) {
			x.t.Errorf("%s: %s: %s", x.killReport, when, line)
		}
	}
}

// assertOnlyDeadReservations checks, with B live, that the host holds
// exactly B's attachment plus the IPAM reservations and intents of A's
// dead containers (their DEL has not come yet; nswire-restore skips an
// intent whose veth is gone): the take-over released their firewall
// elements.
func (x *takeoverRound) assertOnlyDeadReservations(b *att) {
	d, err := x.r.diff(x.nets, []*att{b})
	if err != nil {
		x.t.Fatal(err)
	}
	want := map[string]bool{}
	for _, a := range x.deadA {
		for _, ipc := range a.res.IPs {
			want["leaked reservation "+x.a.name+"/"+ipc.Address.IP.String()+" "] = true
		}
		want["leaked intent "+a.String()] = true
	}
	for _, line := range d {
		found := false
		for prefix := range want {
			if strings.HasPrefix(line, prefix) {
				delete(want, prefix)
				found = true
				break
			}
		}
		if !found {
			x.t.Errorf("%s: after the retried ADD: %s", x.killReport, line)
		}
	}
	for prefix := range want {
		x.t.Errorf("%s: the take-over removed what a dead container's DEL must find (%s)", x.killReport, prefix)
	}
}

// assertOwnedByB checks that B's container works and that S is B's:
// routes, addresses, records and the firewall's subnet set.
func (x *takeoverRound) assertOwnedByB(b *att, when string) {
	t, h := x.t, x.r.host.Handle()
	if err := x.reaches(b); err != nil {
		t.Errorf("%s: %s: B's container: %v", x.killReport, when, err)
	}
	if _, err := h.LinkByName(x.a.bridge); err == nil {
		br, _ := h.LinkByName(x.a.bridge)
		t.Errorf("%s: %s: dead A's bridge %s is still there (addresses in %s: %v)", x.killReport, when, x.a.bridge, x.s, x.addrsIn(br, x.s))
	}
	// Who routes S: B's bridge, or in routed mode B's host veth for B's
	// address; no other link holds an address in S.
	bLink := x.b.bridge
	if x.v.routed {
		bLink = b.hostVeth()
	}
	l, err := h.LinkByName(bLink)
	if err != nil {
		t.Fatalf("%s: %s: B's %s: %v", x.killReport, when, bLink, err)
	}
	probes := []net.IP{b.ip(true)}
	if !x.v.routed {
		probes = append(probes, nthIP(x.s, 200))
	}
	for _, ip := range probes {
		routes, err := h.RouteGet(ip)
		if err != nil || len(routes) == 0 || routes[0].LinkIndex != l.Attrs().Index {
			t.Errorf("%s: %s: route to %s: %v %v, want via %s (index %d)", x.killReport, when, ip, routes, err, bLink, l.Attrs().Index)
		}
	}
	x.onlyHolderOfS(l.Attrs().Index, when)
	recs := x.records()
	if !x.recorded(recs, x.b) || x.recorded(recs, x.a) || !slices.Contains(recs, "subnet "+x.b.name+" "+x.bSub.String()) {
		t.Errorf("%s: %s: records %q, want B's (subnet %s) and not A's", x.killReport, when, recs, x.bSub)
	}
	if got, want := x.netsStarts(), []string{x.bSub.IP.String()}; !slices.Equal(got, want) {
		t.Errorf("%s: %s: nftables set nets4 starts %v, want %v", x.killReport, when, got, want)
	}
}

// assertOwnedByA checks A's container after A took S back from dead B.
func (x *takeoverRound) assertOwnedByA(a *att) {
	t, h := x.t, x.r.host.Handle()
	if err := x.reaches(a); err != nil {
		t.Errorf("%s: A back: %v", x.killReport, err)
	}
	if !x.v.routed {
		if _, err := h.LinkByName(x.b.bridge); err == nil {
			t.Errorf("%s: A back: dead B's bridge %s is still there", x.killReport, x.b.bridge)
		}
	}
	br, err := h.LinkByName(x.a.bridge)
	if err != nil {
		t.Fatalf("%s: A back: A's bridge: %v", x.killReport, err)
	}
	for _, ip := range []net.IP{a.ip(true), nthIP(x.s, 200)} {
		routes, err := h.RouteGet(ip)
		if err != nil || len(routes) == 0 || routes[0].LinkIndex != br.Attrs().Index {
			t.Errorf("%s: A back: route to %s: %v %v, want via %s", x.killReport, ip, routes, err, x.a.bridge)
		}
	}
	x.onlyHolderOfS(br.Attrs().Index, "A back")
	recs := x.records()
	if !x.recorded(recs, x.a) || x.recorded(recs, x.b) {
		t.Errorf("%s: A back: records %q, want A's and not B's", x.killReport, recs)
	}
	if got, want := x.netsStarts(), []string{x.s.IP.String()}; !slices.Equal(got, want) {
		t.Errorf("%s: A back: nftables set nets4 starts %v, want %v", x.killReport, got, want)
	}
}

// reaches proves TCP from the host to the container and, in bridge mode,
// from the container to its gateway, and that CHECK passes.
func (x *takeoverRound) reaches(a *att) error {
	var errs []error
	if err := testutil.Connect(x.r.host.NS, a.ns, a.ip(true)); err != nil {
		errs = append(errs, fmt.Errorf("host -> %s %s: %w", a, a.ip(true), err))
	}
	if !a.net.routed {
		if err := testutil.Connect(a.ns, x.r.host.NS, a.gateway(true)); err != nil {
			errs = append(errs, fmt.Errorf("%s -> gateway %s: %w", a, a.gateway(true), err))
		}
	}
	if err := x.r.check(a); err != nil {
		errs = append(errs, fmt.Errorf("CHECK %s: %w", a, err))
	}
	return errors.Join(errs...)
}

// onlyHolderOfS fails when a link other than index holds an IPv4 address
// whose prefix overlaps S.
func (x *takeoverRound) onlyHolderOfS(index int, when string) {
	addrs, err := x.r.host.Handle().AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		x.t.Fatal(err)
	}
	for _, a := range addrs {
		if overlaps(a.IPNet, x.s) && a.LinkIndex != index {
			name := strconv.Itoa(a.LinkIndex)
			if l, err := x.r.host.Handle().LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			x.t.Errorf("%s: %s: %s holds %s, in %s", x.killReport, when, name, a.IPNet, x.s)
		}
	}
}

func (x *takeoverRound) portsOf(br netlink.Link) []string {
	links, err := x.r.host.Handle().LinkList()
	if err != nil {
		x.t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func (x *takeoverRound) addrsIn(l netlink.Link, s *net.IPNet) []string {
	addrs, err := x.r.host.Handle().AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		x.t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if overlaps(a.IPNet, s) {
			out = append(out, a.IPNet.String())
		}
	}
	return out
}

func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// nthIP is the n-th address of an IPv4 subnet.
func nthIP(s *net.IPNet, n byte) net.IP {
	ip := slices.Clone(s.IP.To4())
	ip[3] += n
	return ip
}

// records are the comments of nswire's "networks" chain (pkg/firewall
// claims.go): "net <name> <bridge|-> <flags>", "subnet <name> <cidr>".
func (x *takeoverRound) records() []string {
	c, err := nftables.New(nftables.WithNetNSFd(int(x.r.host.Fd())))
	if err != nil {
		x.t.Fatal(err)
	}
	rules, err := c.GetRules(&nftables.Table{Name: "nswire", Family: nftables.TableFamilyINet}, &nftables.Chain{Name: "networks"})
	if err != nil {
		x.t.Fatalf("read the networks chain: %v", err)
	}
	var out []string
	for _, rule := range rules {
		if s, ok := userdata.GetString(rule.UserData, userdata.TypeComment); ok {
			out = append(out, s)
		}
	}
	return out
}

// recorded reports whether recs hold n as configured.
func (x *takeoverRound) recorded(recs []string, n *network) bool {
	bridge := n.bridge
	if bridge == "" {
		bridge = "-"
	}
	return slices.ContainsFunc(recs, func(r string) bool { return strings.HasPrefix(r, "net "+n.name+" "+bridge+" ") })
}

// netsStarts lists the first address of each interval in the inet set
// nets4 (the subnets of every network, pkg/firewall/network.go).
func (x *takeoverRound) netsStarts() []string {
	c, err := nftables.New(nftables.WithNetNSFd(int(x.r.host.Fd())))
	if err != nil {
		x.t.Fatal(err)
	}
	set, err := c.GetSetByName(&nftables.Table{Name: "nswire", Family: nftables.TableFamilyINet}, "nets4")
	if err != nil {
		x.t.Fatalf("set nets4: %v", err)
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		x.t.Fatalf("set nets4: %v", err)
	}
	var out []string
	for _, e := range els {
		if !e.IntervalEnd && len(e.Key) == 4 {
			out = append(out, net.IP(e.Key).String())
		}
	}
	sort.Strings(out)
	return out
}
