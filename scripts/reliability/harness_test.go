package reliability

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/shaping"
	"github.com/nswire/nswire/pkg/testutil"
)

// rig is one test's private "host" namespace and the plugin binary that
// runs inside it, driven directly (env + stdin) the way a runtime does.
type rig struct {
	t    *testing.T
	host *testutil.Host
	bin  string

	mu   sync.Mutex
	took map[string]time.Duration // per verb, moving average of recent calls
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return &rig{t: t, host: testutil.NewHost(t, binDir), bin: filepath.Join(binDir, "nswire"), took: map[string]time.Duration{}}
}

// network is one nswire network configuration in a rig.
type network struct {
	name    string
	bridge  string // "" in routed mode
	routed  bool
	dataDir string
	conf    map[string]any // plugin config without cniVersion
}

// newNetwork returns a network over subnets (one range set each) that
// accepts the portMappings and bandwidth capabilities.
func (r *rig) newNetwork(routed bool, subnets ...string) *network {
	n := &network{name: testutil.Name("rel"), dataDir: r.host.DataDir, routed: routed}
	var ranges []any
	for _, s := range subnets {
		ranges = append(ranges, []any{map[string]any{"subnet": s}})
	}
	n.conf = map[string]any{
		"name": n.name, "type": "nswire",
		"capabilities": map[string]bool{"portMappings": true, "bandwidth": true},
		"ipam":         map[string]any{"type": "nswire-ipam", "dataDir": n.dataDir, "ranges": ranges},
	}
	if routed {
		n.conf["mode"] = "routed"
	} else {
		n.bridge = testutil.Name("relbr")
		n.conf["bridge"] = n.bridge
	}
	return n
}

// stdin is the network config as a runtime sends it, plus extra keys.
func (n *network) stdin(extra map[string]any) []byte {
	m := map[string]any{"cniVersion": "1.1.0"}
	for k, v := range n.conf {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// ipamDir is where the network's reservations live.
func (n *network) ipamDir() string { return filepath.Join(n.dataDir, n.name) }

// att is one attachment (container, ifname) of a network.
type att struct {
	net    *network
	id     string
	ifname string
	ns     *testutil.NS
	rc     map[string]any // runtimeConfig (capability args)
	raw    []byte         // ADD's result as printed
	res    *current.Result
}

func (a *att) String() string { return a.net.name + "/" + a.id + "/" + a.ifname }

func (a *att) hostVeth() string {
	return link.HostVethName(ident.Attachment{Network: a.net.name, ContainerID: a.id, IfName: a.ifname})
}

// shaped reports whether the attachment has an ifb (egress shaping).
func (a *att) shaped() bool {
	b, _ := a.rc["bandwidth"].(map[string]any)
	return b != nil && b["egressRate"] != nil
}

// chains are the attachment's nftables chains as pkg/firewall names them
// (doc.go): g-<net8>-<att16> (anti-spoofing) always, a-<net8>-<att16>
// (DNAT) when it publishes ports.
func (a *att) chains() []string {
	net8 := ident.Hex(8, a.net.name)
	att16 := ident.Hex(16, a.net.name, a.id, a.ifname)
	out := []string{"g-" + net8 + "-" + att16}
	if p, _ := a.rc["portMappings"].([]any); len(p) > 0 {
		out = append(out, "a-"+net8+"-"+att16)
	}
	return out
}

func (a *att) ip(v4 bool) net.IP {
	if ipc := testutil.Family(a.res, v4); ipc != nil {
		return ipc.Address.IP
	}
	return nil
}

func (a *att) gateway(v4 bool) net.IP {
	if ipc := testutil.Family(a.res, v4); ipc != nil {
		return ipc.Gateway
	}
	return nil
}

// call is one plugin invocation.
type call struct {
	verb  string
	env   []string
	stdin []byte
}

func (r *rig) env(verb string, a *att) []string {
	env := []string{"CNI_COMMAND=" + verb, "CNI_PATH=" + binDir}
	if a != nil {
		env = append(env, "CNI_CONTAINERID="+a.id, "CNI_IFNAME="+a.ifname)
		if a.ns != nil {
			env = append(env, "CNI_NETNS="+a.ns.Path())
		}
	}
	return env
}

func (r *rig) addCall(a *att) call {
	return call{"ADD", r.env("ADD", a), a.net.stdin(map[string]any{"runtimeConfig": a.rc})}
}

// delCall carries no prevResult: the recovery DEL of a half-made
// attachment, whose ADD never printed one.
func (r *rig) delCall(a *att) call {
	return call{"DEL", r.env("DEL", a), a.net.stdin(map[string]any{"runtimeConfig": a.rc})}
}

func (r *rig) checkCall(a *att) call {
	return call{"CHECK", r.env("CHECK", a), a.net.stdin(map[string]any{"runtimeConfig": a.rc, "prevResult": json.RawMessage(a.raw)})}
}

// gcCall keeps live, as libcni sends it (both keys).
func (r *rig) gcCall(n *network, live []*att) call {
	valid := []map[string]string{}
	for _, a := range live {
		if a.net == n {
			valid = append(valid, map[string]string{"containerID": a.id, "ifname": a.ifname})
		}
	}
	return call{"GC", r.env("GC", nil), n.stdin(map[string]any{"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid})}
}

// run executes c to completion; a failure is the *types.Error the plugin
// printed, or the exec error when it printed none.
func (r *rig) run(c call) ([]byte, error) {
	start := time.Now()
	out, err := r.host.Exec(r.bin, c.env, c.stdin)
	r.noteDuration(c.verb, time.Since(start))
	return out, cniError(out, err)
}

// noteDuration keeps a moving average per verb, so a test that kills a
// call at a random instant of it follows the machine's current load.
func (r *rig) noteDuration(verb string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.took[verb]; old > 0 {
		d = (3*old + d) / 4
	}
	r.took[verb] = d
}

// typical is verb's recent duration (0 before any call).
func (r *rig) typical(verb string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.took[verb]
}

func cniError(out []byte, err error) error {
	if err == nil {
		return nil
	}
	var e types.Error
	if json.Unmarshal(out, &e) == nil && e.Code != 0 {
		return &e
	}
	return fmt.Errorf("%w (stdout %q)", err, out)
}

// add runs ADD to completion and records the result and chains.
func (r *rig) add(a *att) error {
	out, err := r.run(r.addCall(a))
	if err != nil {
		return err
	}
	return r.adopt(a, out)
}

func (r *rig) adopt(a *att, out []byte) error {
	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("ADD %s result %q: %w", a, out, err)
	}
	a.raw, a.res = out, &res
	return nil
}

func (r *rig) mustAdd(a *att) {
	r.t.Helper()
	if err := r.add(a); err != nil {
		r.t.Fatalf("ADD %s: %v", a, err)
	}
}

func (r *rig) mustDel(a *att) {
	r.t.Helper()
	if _, err := r.run(r.delCall(a)); err != nil {
		r.t.Fatalf("DEL %s: %v", a, err)
	}
}

func (r *rig) check(a *att) error {
	_, err := r.run(r.checkCall(a))
	return err
}

// proc is a plugin process that may be killed.
type proc struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// start runs c inside the host namespace without waiting.
func (r *rig) start(c call) (*proc, error) {
	p := &proc{cmd: exec.Command(r.bin)}
	p.cmd.Env, p.cmd.Stdin, p.cmd.Stdout = c.env, bytes.NewReader(c.stdin), &p.out
	err := r.host.NetNS.Do(func(ns.NetNS) error { return p.cmd.Start() })
	return p, err
}

// kill sends SIGKILL and reaps; killed is false when the plugin had
// already exited, and err is then its CNI outcome.
func (p *proc) kill() (killed bool, err error) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	werr := p.cmd.Wait()
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return true, nil
	}
	return false, cniError(p.out.Bytes(), werr)
}

// hostState is everything on the host that looks like nswire's.
type hostState struct {
	links        map[string]string // name -> alias: marked links and nsw…/nsi… names
	chains       []string
	portElems    []string          // "<set> <host port>" of the per-port sets
	reservations map[string]string // network/ip -> owner file content
	tmp          []string          // IPAM scratch files left behind
	intents      map[string]bool   // network/containerID/ifname of each intent file
}

var ownNameRe = regexp.MustCompile(`^ns[wi][0-9a-f]{12}$`)

// state reads the host; safe from any goroutine (errors are returned, not
// reported through t).
func (r *rig) state(nets ...*network) (hostState, error) {
	s := hostState{links: map[string]string{}, reservations: map[string]string{}, intents: map[string]bool{}}
	links, err := r.host.Handle().LinkList()
	if err != nil {
		return s, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Alias, "nswire") || ownNameRe.MatchString(a.Name) {
			s.links[a.Name] = a.Alias
		}
	}
	s.chains = r.host.AttachmentChains()
	s.portElems = r.host.PortElements()
	sort.Strings(s.chains)
	for _, n := range nets {
		entries, err := os.ReadDir(n.ipamDir())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return s, err
		}
		for _, e := range entries {
			if net.ParseIP(e.Name()) != nil {
				b, _ := os.ReadFile(filepath.Join(n.ipamDir(), e.Name()))
				s.reservations[n.name+"/"+e.Name()] = string(b)
			}
		}
		tmps, _ := filepath.Glob(filepath.Join(n.ipamDir(), ".nswire", "tmp.*"))
		s.tmp = append(s.tmp, tmps...)
		ins, err := intent.Load(intent.Dir(n.dataDir, n.name))
		if err != nil {
			return s, err
		}
		for _, in := range ins {
			s.intents[in.ID().String()] = true
		}
	}
	return s, nil
}

// diff compares the host with what exactly the live attachments own and
// returns one line per difference.
func (r *rig) diff(nets []*network, live []*att) ([]string, error) {
	s, err := r.state(nets...)
	if err != nil {
		return nil, err
	}
	var d []string
	wantLinks := map[string]string{}
	var wantChains []string
	wantRes := map[string]string{}
	for _, a := range live {
		wantLinks[a.hostVeth()] = link.Alias(ident.Attachment{Network: a.net.name, ContainerID: a.id, IfName: a.ifname})
		if a.shaped() {
			wantLinks[shaping.IfbName(a.hostVeth())] = "nswire-shaping/" + a.hostVeth()
		}
		wantChains = append(wantChains, a.chains()...)
		for _, ipc := range a.res.IPs {
			wantRes[a.net.name+"/"+ipc.Address.IP.String()] = a.id + "\r\n" + a.ifname
		}
	}
	for name, alias := range s.links {
		if w, ok := wantLinks[name]; !ok {
			d = append(d, fmt.Sprintf("leaked link %s (alias %q)", name, alias))
		} else if w != alias {
			d = append(d, fmt.Sprintf("link %s has alias %q, want %q", name, alias, w))
		}
	}
	for name := range wantLinks {
		if _, ok := s.links[name]; !ok {
			d = append(d, "live link "+name+" is gone")
		}
	}
	sort.Strings(wantChains)
	if strings.Join(wantChains, " ") != strings.Join(s.chains, " ") {
		d = append(d, fmt.Sprintf("nftables chains %v, want %v", s.chains, wantChains))
	}
	d = append(d, diffPortElems(s.portElems, live)...)
	for k, v := range s.reservations {
		if w, ok := wantRes[k]; !ok {
			d = append(d, fmt.Sprintf("leaked reservation %s (%q)", k, v))
		} else if !strings.HasPrefix(v, w) {
			d = append(d, fmt.Sprintf("reservation %s held by %q, want %q", k, v, w))
		}
	}
	for k := range wantRes {
		if _, ok := s.reservations[k]; !ok {
			d = append(d, "live reservation "+k+" is gone")
		}
	}
	d = append(d, diffIntents(s.intents, live)...)
	sort.Strings(d)
	return d, nil
}

// diffIntents checks that exactly the live attachments have an intent
// file (pkg/intent), which nswire-restore would apply again.
func diffIntents(have map[string]bool, live []*att) []string {
	want := map[string]bool{}
	for _, a := range live {
		want[a.String()] = true
	}
	var d []string
	for id := range have {
		if !want[id] {
			d = append(d, "leaked intent "+id)
		}
	}
	for id := range want {
		if !have[id] {
			d = append(d, "live attachment "+id+" has no intent")
		}
	}
	return d
}

// diffPortElems checks the per-port set elements: every live attachment's
// host port is guarded, and no element names any other port.
func diffPortElems(elems []string, live []*att) []string {
	ports := map[string]bool{}
	for _, a := range live {
		ports[a.hostVeth()] = true
	}
	var d []string
	for _, e := range elems {
		if _, port, _ := strings.Cut(e, " "); !ports[port] {
			d = append(d, "leaked nftables element "+e)
		}
	}
	for _, a := range live {
		if !slices.Contains(elems, "guarded "+a.hostVeth()) {
			d = append(d, "live port "+a.hostVeth()+" is not in set guarded")
		}
	}
	return d
}

// assertExactly fails the test unless the host holds exactly what live
// owns: links, nftables chains, reservations.
func (r *rig) assertExactly(nets []*network, live []*att) {
	r.t.Helper()
	d, err := r.diff(nets, live)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, line := range d {
		r.t.Error(line)
	}
}

// assertWorks proves TCP from a to b and from a to its gateway (bridge
// mode), and that CHECK passes for both.
func (r *rig) assertWorks(a, b *att) {
	r.t.Helper()
	if err := r.works(a, b); err != nil {
		r.t.Error(err)
	}
}

func (r *rig) works(a, b *att) error {
	var errs []error
	for _, v4 := range []bool{true, false} {
		if a.ip(v4) == nil || b.ip(v4) == nil {
			continue
		}
		if err := testutil.Connect(a.ns, b.ns, b.ip(v4)); err != nil {
			errs = append(errs, fmt.Errorf("%s -> %s %s: %w", a, b, b.ip(v4), err))
		}
		if !a.net.routed {
			if err := testutil.Connect(a.ns, r.host.NS, a.gateway(v4)); err != nil {
				errs = append(errs, fmt.Errorf("%s -> gateway %s: %w", a, a.gateway(v4), err))
			}
		}
	}
	for _, x := range []*att{a, b} {
		if err := r.check(x); err != nil {
			errs = append(errs, fmt.Errorf("CHECK %s: %w", x, err))
		}
	}
	return errors.Join(errs...)
}

// onlyLo fails unless the container namespace holds nothing but lo.
func onlyLo(c *testutil.NS) error {
	links, err := c.Handle().LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			return fmt.Errorf("container %s still holds %s", c.Path(), l.Attrs().Name)
		}
	}
	return nil
}

// cleanupAll deletes every attachment still registered, then checks the
// host is clean; registered first so it runs before the namespaces go.
type registry struct {
	mu   sync.Mutex
	atts map[*att]bool
}

func (g *registry) put(a *att) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.atts == nil {
		g.atts = map[*att]bool{}
	}
	g.atts[a] = true
}

func (g *registry) drop(a *att) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.atts, a)
}

func (g *registry) all() []*att {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*att
	for a := range g.atts {
		out = append(out, a)
	}
	return out
}

// tidy registers a cleanup that DELs every attachment the test may have
// left (even after a failure) and then checks nothing leaked. Cleanups run
// newest first, so container namespaces are gone by then: DEL needs none.
func (r *rig) tidy(nets func() []*network, reg *registry) {
	r.t.Cleanup(func() {
		for _, a := range reg.all() {
			if _, err := r.run(r.delCall(a)); err != nil {
				r.t.Errorf("cleanup DEL %s: %v", a, err)
			}
		}
		r.host.AssertNoLeaks()
		if d, err := r.diff(nets(), nil); err != nil || len(d) > 0 {
			r.t.Errorf("after cleanup: %v %v", d, err)
		}
	})
}

// envInt reads a positive count from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
