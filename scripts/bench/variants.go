package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/nswire/nswire/pkg/testutil"
)

// variant is one plugin chain under test. Every variant has the same
// features: a bridge with the gateway, masquerade, one published TCP port
// per container, IPv4 (and IPv6 when dual).
type variant struct {
	key    string // short name used in tables and the plot
	name   string // what it is
	nswire bool
	dual   bool
	conf   func(dataDir, logFile string) []map[string]any
}

const (
	subnet4 = "10.50.0.0/16"
	subnet6 = "fd00:50::/64"
	// portBase + slot is the host port published by the container in that
	// slot: unique among the live containers of a variant.
	portBase = 20000
)

func ranges(dual bool) []any {
	r := []any{[]any{map[string]any{"subnet": subnet4}}}
	if dual {
		r = append(r, []any{map[string]any{"subnet": subnet6}})
	}
	return r
}

func variants(refDual bool, refBackend string) []variant {
	nsw := func(dual bool) func(string, string) []map[string]any {
		return func(dataDir, logFile string) []map[string]any {
			c := []map[string]any{{
				"name": "bench", "type": "nswire", "bridge": "nswbench0", "mtu": 1500, "ipMasq": true,
				"capabilities": map[string]any{"portMappings": true},
				"ipam":         map[string]any{"type": "nswire-ipam", "dataDir": dataDir, "ranges": ranges(dual)},
			}}
			if logFile != "" {
				c[0]["logFile"] = logFile
			}
			return c
		}
	}
	ref := func(dual bool) func(string, string) []map[string]any {
		return func(dataDir, _ string) []map[string]any {
			br := map[string]any{
				"name": "bench", "type": "bridge", "bridge": "refbench0", "mtu": 1500,
				"isGateway": true, "ipMasq": true,
				"ipam": map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": ranges(dual)},
			}
			pm := map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}}
			if refBackend != "" {
				br["ipMasqBackend"] = refBackend
				pm["backend"] = refBackend
			}
			return []map[string]any{br, pm, {"type": "firewall"}}
		}
	}
	vs := []variant{
		{key: "nswire", name: "nswire + nswire-ipam, IPv4", nswire: true, conf: nsw(false)},
		{key: "nswire dual", name: "nswire + nswire-ipam, IPv4+IPv6", nswire: true, dual: true, conf: nsw(true)},
		{key: "reference", name: "bridge + host-local + portmap + firewall v1.10.0, IPv4", conf: ref(false)},
	}
	if refDual {
		vs = append(vs, variant{key: "reference dual", name: "bridge + host-local + portmap + firewall v1.10.0, IPv4+IPv6", dual: true, conf: ref(true)})
	}
	return vs
}

// env is a variant set up in its own private host namespace, with a pool of
// container namespaces made before any timing. A slot's namespace is reused
// by the next phase once DEL has emptied it.
type env struct {
	v    variant
	host *testutil.Host
	cni  *libcni.CNIConfig // every timed call: plainExec
	exec *plainExec
	// The untimed peak-RSS pass only: the same plugins through a spawner
	// in the same host namespace, sharing the result cache.
	rssCNI *libcni.CNIConfig
	rss    *spawnExec
	// How many containers the variant takes through each phase (0: it sits
	// the phase out): the reference chain is an order of magnitude slower,
	// so it gets smaller samples, spread over the phase.
	seqN, parN, scaleN int
	list               *libcni.NetworkConfigList
	pool               []*testutil.NS

	mu       sync.Mutex
	live     []bool // slot holds an attachment (its ADD succeeded, no DEL yet)
	errs     map[string]int
	errFirst []string

	res results

	floorKB int64  // the RSS pass spawner's own peak RSS, see spawner/main.go
	logFile string // nswire's per-verb step log (-steps)

	baseRules string // nft ruleset (stateless) after the warm-up ADD+DEL
	baseIPAM  string // IPAM dataDir listing after the warm-up
}

func newEnv(t testutil.T, v variant, binDirs []string, slots int, spawnerPath string, steps bool) *env {
	h := testutil.NewHost(t, binDirs...)
	logFile := ""
	if steps && v.nswire {
		logFile = filepath.Join(t.TempDir(), "nswire.log")
	}
	cache := t.TempDir()
	e := &env{
		v: v, host: h, logFile: logFile,
		exec: &plainExec{host: h.NetNS},
		rss:  &spawnExec{sp: startSpawner(t, spawnerPath, h.NetNS)},
		list: testutil.ConfList(t, "1.1.0", v.conf(h.DataDir, logFile)...),
		errs: map[string]int{},
		res:  results{seq: map[string][]time.Duration{}, leaks: map[string][]string{}},
	}
	e.cni = libcni.NewCNIConfigWithCacheDir(binDirs, cache, e.exec)
	e.rssCNI = libcni.NewCNIConfigWithCacheDir(binDirs, cache, e.rss)
	e.grow(t, slots)
	return e
}

// grow makes sure the pool has at least n namespaces.
func (e *env) grow(t testutil.T, n int) {
	for len(e.pool) < n {
		e.pool = append(e.pool, testutil.NewNS(t))
		e.live = append(e.live, false)
	}
}

func (e *env) rt(phase string, slot int) *libcni.RuntimeConf {
	rt := testutil.RT(fmt.Sprintf("%s-%05d", phase, slot), e.pool[slot], "eth0")
	rt.CapabilityArgs = map[string]any{"portMappings": []any{
		map[string]any{"hostPort": portBase + slot, "containerPort": 80, "protocol": "tcp"},
	}}
	return rt
}

// op runs one verb for one slot through the plain driver and returns its
// latency; failures are counted and the first few kept for the report.
func (e *env) op(ctx context.Context, verb, phase string, slot int) (time.Duration, bool) {
	return e.opVia(ctx, e.cni, verb, phase, slot)
}

func (e *env) opVia(ctx context.Context, cni *libcni.CNIConfig, verb, phase string, slot int) (time.Duration, bool) {
	rt := e.rt(phase, slot)
	start := time.Now()
	var err error
	switch verb {
	case "ADD":
		_, err = cni.AddNetworkList(ctx, e.list, rt)
	case "CHECK":
		err = cni.CheckNetworkList(ctx, e.list, rt)
	case "DEL":
		err = cni.DelNetworkList(ctx, e.list, rt)
	}
	d := time.Since(start)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return d, false
		}
		e.errs[phase+" "+verb]++
		if len(e.errFirst) < 5 {
			e.errFirst = append(e.errFirst, fmt.Sprintf("%s %s %s: %v", phase, verb, rt.ContainerID, err))
		}
		return d, false
	}
	switch verb {
	case "ADD":
		e.live[slot] = true
	case "DEL":
		e.live[slot] = false
	}
	return d, true
}

// inHost runs a command inside the variant's host namespace.
func (e *env) inHost(name string, args ...string) (string, error) {
	var out []byte
	err := e.host.NetNS.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	return string(out), err
}

func (e *env) rules() string {
	out, err := e.inHost("nft", "-s", "list", "ruleset")
	if err != nil {
		return "nft failed: " + err.Error() + ": " + out
	}
	return out
}

func (e *env) ipamFiles() string {
	var names []string
	_ = filepath.Walk(e.host.DataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(e.host.DataDir, p)
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	return strings.Join(names, "\n")
}

// leaks lists what the variant's host and container namespaces still hold
// once every attachment is deleted, compared with the state after the
// warm-up: veths, nswire's per-attachment chains, other nftables
// differences, IPAM files, interfaces left in container namespaces.
func (e *env) leaks() []string {
	var found []string
	links, err := e.host.Handle().LinkList()
	if err != nil {
		return []string{"list links: " + err.Error()}
	}
	for _, l := range links {
		if l.Type() == "veth" || strings.HasPrefix(l.Attrs().Alias, "nswire") && l.Type() != "bridge" {
			found = append(found, fmt.Sprintf("host link %s (%s, alias %q)", l.Attrs().Name, l.Type(), l.Attrs().Alias))
		}
	}
	if e.v.nswire {
		if ch := e.host.AttachmentChains(); len(ch) > 0 {
			found = append(found, fmt.Sprintf("%d per-attachment nft chains, e.g. %s", len(ch), ch[0]))
		}
	}
	if d := diffLines(e.baseRules, e.rules()); d != "" {
		found = append(found, "nftables ruleset differs from after warm-up: "+d)
	}
	if d := diffLines(e.baseIPAM, e.ipamFiles()); d != "" {
		found = append(found, "IPAM dataDir differs from after warm-up: "+d)
	}
	busy := 0
	example := ""
	for i, n := range e.pool {
		ls, err := n.Handle().LinkList()
		if err == nil && len(ls) > 1 {
			busy++
			if example == "" {
				example = fmt.Sprintf("slot %d holds %d links", i, len(ls))
			}
		}
	}
	if busy > 0 {
		found = append(found, fmt.Sprintf("%d container namespaces still hold interfaces (%s)", busy, example))
	}
	return found
}

// diffLines summarises lines added and removed between two texts.
func diffLines(before, after string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				m[l]++
			}
		}
		return m
	}
	b, a := count(before), count(after)
	var added, removed []string
	for l, n := range a {
		if n > b[l] {
			added = append(added, l)
		}
	}
	for l, n := range b {
		if n > a[l] {
			removed = append(removed, l)
		}
	}
	if len(added)+len(removed) == 0 {
		return ""
	}
	sort.Strings(added)
	sort.Strings(removed)
	ex := func(ls []string) string {
		if len(ls) > 3 {
			return strings.Join(ls[:3], " | ") + " | …"
		}
		return strings.Join(ls, " | ")
	}
	return fmt.Sprintf("+%d lines (%s), -%d lines (%s)", len(added), ex(added), len(removed), ex(removed))
}
