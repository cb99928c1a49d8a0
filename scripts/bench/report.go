package main

import (
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type report struct {
	opts     options
	machine  string
	build    string
	started  time.Time
	finished time.Time
	phases   []phaseInfo
	loads    *loadSampler
	startup  []*startProg
	// startFloorKB is the start-up spawner's own peak RSS.
	startFloorKB int64
	envs         []*env
	parEnvs      []*env
	scaleEnvs    []*env
	probe        *probePair // nil: no probes
}

type phaseInfo struct {
	name         string
	dur          time.Duration
	load0, load1 string
}

// ---- numbers ----

// pct is the nearest-rank percentile of ds, in ms; NaN when empty.
func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return ms(s[max(0, min(i, len(s)-1))])
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// meanOK is the mean of the successful (non-negative) latencies, in ms.
func meanOK(ds []time.Duration) float64 {
	var sum time.Duration
	n := 0
	for _, d := range ds {
		if d > 0 {
			sum += d
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return ms(sum) / float64(n)
}

func okOnly(ds []time.Duration) []time.Duration {
	var out []time.Duration
	for _, d := range ds {
		if d > 0 {
			out = append(out, d)
		}
	}
	return out
}

func f2(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "–"
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 2, 64)
}

// scaleEnds is the mean ADD latency of the first and last k indices.
func scaleEnds(ds []time.Duration, k int) (first, last float64) {
	k = min(k, len(ds)/2)
	if k == 0 {
		return math.NaN(), math.NaN()
	}
	return meanOK(ds[:k]), meanOK(ds[len(ds)-k:])
}

// ---- lookups ----

func (r *report) env(key string) *env {
	for _, e := range r.envs {
		if e.v.key == key {
			return e
		}
	}
	return nil
}

func (r *report) prog(name string) *startProg {
	for _, p := range r.startup {
		if p.name == name {
			return p
		}
	}
	return nil
}

func (e *env) seqP(verb string, p float64) float64 {
	if e == nil {
		return math.NaN()
	}
	return pct(e.res.seq[verb], p)
}

func (e *env) parRun(callers int) *parRun {
	if e == nil {
		return nil
	}
	for i := range e.res.par {
		if e.res.par[i].callers == callers {
			return &e.res.par[i]
		}
	}
	return nil
}

// peakRSS is the largest max RSS over the RSS pass's calls of a binary,
// in MB.
func (e *env) peakRSS(bin string) (mb float64, verb string, calls int) {
	for k, u := range e.rss.snapshot() {
		if k[0] != bin {
			continue
		}
		calls += u.calls
		if m := float64(u.maxRSSKB) / 1024; m > mb {
			mb, verb = m, k[1]
		}
	}
	return mb, verb, calls
}

// cpuPerCall is the CPU (user+sys, children included) of the sequential
// phase's calls of verb, summed over the chain's binaries, per call of the
// first plugin.
func (e *env) cpuPerCall(verb string) float64 {
	var cpu time.Duration
	calls := 0
	first := e.list.Plugins[0].Network.Type
	for k, u := range e.res.seqUsage {
		if k[1] != verb {
			continue
		}
		cpu += u.cpu
		if k[0] == first {
			calls = u.calls
		}
	}
	if calls == 0 {
		return math.NaN()
	}
	return ms(cpu) / float64(calls)
}

// ---- targets ----

type target struct {
	what, value string
	ok          bool
	known       bool
}

func mark(t target) string {
	switch {
	case !t.known:
		return "?"
	case t.ok:
		return "✓"
	}
	return "✗"
}

func (r *report) targets() []target {
	nsw, dual, ref := r.env("nswire"), r.env("nswire dual"), r.env("reference")
	var ts []target
	add := func(what, value string, known, ok bool) {
		ts = append(ts, target{what: what, value: value, known: known, ok: ok})
	}
	known := func(xs ...float64) bool {
		for _, x := range xs {
			if math.IsNaN(x) {
				return false
			}
		}
		return true
	}
	a, d := nsw.seqP("ADD", .5), nsw.seqP("DEL", .5)
	add("nswire ADD p50 ≤ 5 ms", f2(a)+" ms", known(a), a <= 5)
	add("nswire DEL p50 ≤ 20 ms", f2(d)+" ms", known(d), d <= 20)
	ra, rd := ref.seqP("ADD", .5), ref.seqP("DEL", .5)
	add("ADD ≥ 20× faster than the reference (p50)", fmt.Sprintf("%s× (%s vs %s ms)", f2(ra/a), f2(ra), f2(a)), known(ra, a), ra/a >= 20)
	add("DEL ≥ 10× faster than the reference (p50)", fmt.Sprintf("%s× (%s vs %s ms)", f2(rd/d), f2(rd), f2(d)), known(rd, d), rd/d >= 10)
	if p := nsw.parRun(8); p != nil {
		rate, p99 := p.rate("ADD"), pct(p.lat["ADD"], .99)
		add("8 callers: ≥ 200 ADD/s, ADD p99 < 100 ms", fmt.Sprintf("%s ADD/s, p99 %s ms", f2(rate), f2(p99)), known(p99), rate >= 200 && p99 < 100)
	}
	if pp := r.probe; pp != nil && len(pp.add[0]) > 0 {
		e, f := pct(pp.add[0], .5), pct(pp.add[1], .5)
		ce, cf := pct(pp.cpu[0], .5), pct(pp.cpu[1], .5)
		add(fmt.Sprintf("container #%d ≤ 1.2× container #1 (ADD p50 of %d alternated probes)", pp.full.scaleN+1, len(pp.add[0])),
			fmt.Sprintf("%s× (%s → %s ms); CPU %s× (%s → %s ms)", f2(f/e), f2(e), f2(f), f2(cf/ce), f2(ce), f2(cf)), known(e, f), f/e <= 1.2)
	} else if nsw != nil && len(nsw.res.scaleAdd) > 0 {
		f, l := scaleEnds(nsw.res.scaleAdd, 20)
		cf, cl := scaleEnds(nsw.res.scaleCPU, 20)
		add(fmt.Sprintf("container #%d ≤ 1.2× container #1 (ADD, mean of 20)", len(nsw.res.scaleAdd)),
			fmt.Sprintf("%s× (%s → %s ms); CPU %s× (%s → %s ms)", f2(l/f), f2(f), f2(l), f2(cl/cf), f2(cf), f2(cl)), known(f, l), l/f <= 1.2)
	}
	da := dual.seqP("ADD", .5)
	add("dual-stack ADD p50 within 1 ms of IPv4-only", fmt.Sprintf("%+.2f ms (%s vs %s)", da-a, f2(da), f2(a)), known(da, a), da-a <= 1)
	if p := r.prog("nswire"); p != nil {
		v := pct(p.lat, .5)
		add("start-up (VERSION round trip p50) ≤ 3 ms", f2(v)+" ms", known(v), v <= 3)
	}
	var rss float64
	for _, e := range []*env{nsw, dual} {
		if e != nil {
			m, _, _ := e.peakRSS("nswire")
			rss = max(rss, m)
		}
	}
	add("nswire peak RSS ≤ 20 MB", f2(rss)+" MB", rss > 0, rss <= 20)
	return ts
}

// ---- Markdown ----

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.opts
	p("# nswire benchmark\n\n")
	p("%s, %s. Machine: %s. Load average (1 min) sampled every 5 s during the run: %s.\n\n",
		r.started.Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second), r.machine, r.loads.summary())
	p("nswire: %s. Reference: containernetworking/plugins %s `bridge` (isGateway, ipMasq) + `host-local` + `portmap` + `firewall`, backend %s. ",
		r.build, "v1.10.0", orDefault(o.refBackend, "default (iptables)"))
	p("Same features on both: bridge with the gateway, masquerade, one published TCP port per container (portMappings capability), MTU 1500, %s (dual: + %s). ", subnet4, subnet6)
	p("Every call goes through libcni (cniVersion 1.1.0), each variant in its own private host namespace; container namespaces are made before any timing. ")
	p("**Driver:** every latency, throughput and CPU figure comes from a plain libcni driver, as a runtime calls plugins: this benchmark's own process forks and execs each plugin (os/exec, as libcni's invoke.RawExec does) from a thread switched into the variant's host namespace, and waits for it; CPU is that wait4's rusage. Peak RSS alone comes from a separate, untimed pass through a small spawner process (see its section). ")
	p("Variants alternate at every container (sequential, scale) or every round (parallel) so that other load on the machine falls on all of them. Times in ms.")
	if o.quick {
		p(" **Quick mode: small samples, smoke test only.**")
	}
	p("\n\n## Targets\n\n| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		p("| %s | %s | %s |\n", t.what, t.value, mark(t))
	}

	p("\n## Sequential: containers added, checked, then deleted, one call at a time\n\n")
	p("| variant | containers | ADD p50 | ADD p99 | CHECK p50 | CHECK p99 | DEL p50 | DEL p99 | CPU/ADD | CPU/DEL |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, e := range r.envs {
		p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", e.v.key, e.seqN,
			f2(e.seqP("ADD", .5)), f2(e.seqP("ADD", .99)), f2(e.seqP("CHECK", .5)), f2(e.seqP("CHECK", .99)),
			f2(e.seqP("DEL", .5)), f2(e.seqP("DEL", .99)), f2(e.cpuPerCall("ADD")), f2(e.cpuPerCall("DEL")))
	}
	p("\nThe reference's fewer containers are spread evenly over the phase, alternating with nswire's. CPU: user+system time of the chain's processes and their children (host-local, iptables), per call, from the driver's wait4: less sensitive than latency to other load on the machine.\n")

	p("\n## Throughput: containers added, then deleted, by N parallel callers (%d rounds, alternating variants)\n\n", o.rounds)
	p("| variant | callers | containers | ADD/s | ADD p50 | ADD p99 | DEL/s | DEL p50 | DEL p99 |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range o.callers {
		for _, e := range r.envs {
			if pr := e.parRun(c); pr != nil {
				p("| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", e.v.key, c, e.parN, f2(pr.rate("ADD")), f2(pct(pr.lat["ADD"], .5)), f2(pct(pr.lat["ADD"], .99)),
					f2(pr.rate("DEL")), f2(pct(pr.lat["DEL"], .5)), f2(pct(pr.lat["DEL"], .99)))
			}
		}
	}

	if len(r.scaleEnvs) > 0 {
		p("\n## Scale: ADD latency against the number of containers already attached, added one after the other\n\n")
		p("| variant | containers | #1–20 mean | last 20 mean | ratio | CPU #1–20 | CPU last 20 | CPU ratio | p50 | p99 | max | DEL p50 | DEL p99 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, e := range r.scaleEnvs {
			f, l := scaleEnds(e.res.scaleAdd, 20)
			adds, dels := okOnly(e.res.scaleAdd), okOnly(e.res.scaleDel)
			mx := math.NaN()
			if len(adds) > 0 {
				mx = ms(slices.Max(adds))
			}
			cf, cl := scaleEnds(e.res.scaleCPU, 20)
			p("| %s | %d | %s | %s | %s× | %s | %s | %s× | %s | %s | %s | %s | %s |\n", e.v.key, e.scaleN, f2(f), f2(l), f2(l/f), f2(cf), f2(cl), f2(cl/cf), f2(pct(adds, .5)), f2(pct(adds, .99)), f2(mx), f2(pct(dels, .5)), f2(pct(dels, .99)))
		}
		p("\nCPU: user+system time of the chain's processes for the ADD: unlike latency, hardly moved by other load on the machine. The reference's ADDs are spread evenly over nswire's (it costs about 0.5 s per container here: `-ref-scale %d` for its full curve). DEL: newest first, with the other containers still attached (nswire%s).", o.scaleN, map[bool]string{true: " and the reference", false: " only; the reference's are removed with its host namespace"}[o.scaleDelRef])
		p(" The plot (%s) shows every ADD and a running median.\n", orDefault(o.png, "-png"))
		if pp := r.probe; pp != nil {
			p("\n%s", pp.markdown())
		}
	}

	p("%s", r.stepsMarkdown())

	p("\n## Plugin processes: peak RSS (untimed pass of %d ADD/CHECK/DEL per variant through the spawner)\n\n", o.rssN)
	p("| variant | binary | calls | peak RSS MB | during | floor MB |\n|---|---|---|---|---|---|\n")
	for _, e := range r.envs {
		bins := map[string]bool{}
		for k := range e.rss.snapshot() {
			bins[k[0]] = true
		}
		names := make([]string, 0, len(bins))
		for n := range bins {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			mb, verb, calls := e.peakRSS(n)
			p("| %s | %s | %d | %s | %s | %s |\n", e.v.key, n, calls, f2(mb), verb, f2(float64(e.floorKB)/1024))
		}
	}
	p("\nPeak RSS is wait4's ru_maxrss, max over the pass's calls of the binary, on a node holding no other container of the variant (after the warm-up, before the timed phases). These plugins are started by a small spawner process in the variant's host namespace, not by the benchmark: Go forks with vfork, and at execve Linux folds the high-water RSS of the parent's memory into the child's ru_maxrss, so children of the benchmark itself would all report its own peak. A child smaller than the spawner reports the spawner's peak (floor). The reference `bridge` runs `host-local`, and `bridge`/`portmap`/`firewall` run `iptables`: ru_maxrss covers a process and its waited-for children. No call of this pass is timed or counted in any CPU figure.\n")

	p("\n## Start-up: CNI_COMMAND=VERSION round trip (fork, exec, init, reply, exit, wait; exec'd and timed by the benchmark), %d per program, alternating; peak RSS from %d more runs each through the spawner (floor %s MB)\n\n", o.startRounds, o.rssN, f2(float64(r.startFloorKB)/1024))
	p("| program | p50 | p90 | p99 | CPU p50 | peak RSS MB | inittrace: sum of inits (median of %d) | inits done at | init allocs KB | costliest inits (ms) |\n|---|---|---|---|---|---|---|---|---|---|\n", o.traceRuns)
	for _, sp := range r.startup {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sp.name, f2(pct(sp.lat, .5)), f2(pct(sp.lat, .9)), f2(pct(sp.lat, .99)),
			f2(pct(sp.cpu, .5)), f2(float64(sp.rssKB)/1024), initCell(sp, medianF(sp.initSum)), initCell(sp, medianF(sp.initEnd)), initCell(sp, medianF(sp.initBytes)/1024), sp.topInits(4))
	}
	if n, e := r.prog("nswire"), r.prog("empty Go program"); n != nil && e != nil {
		p("\nnswire's own start-up cost over the floor of any Go binary: %s ms (p50).\n", f2(pct(n.lat, .5)-pct(e.lat, .5)))
	}

	p("\n## Errors and leaks\n\n")
	clean := true
	checked := r.envs
	if r.probe != nil {
		checked = append(slices.Clip(checked), r.probe.empty)
	}
	for _, e := range checked {
		if len(e.errs) > 0 {
			clean = false
			keys := make([]string, 0, len(e.errs))
			for k := range e.errs {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s ×%d", k, e.errs[k]))
			}
			p("- **%s**: failed calls: %s. First: `%s`\n", e.v.key, strings.Join(parts, ", "), strings.Join(e.errFirst, "` · `"))
		}
		phases := make([]string, 0, len(e.res.leaks))
		for ph := range e.res.leaks {
			phases = append(phases, ph)
		}
		sort.Strings(phases)
		for _, ph := range phases {
			if ls := e.res.leaks[ph]; len(ls) > 0 {
				clean = false
				p("- **%s** after the %s phase's DELs: %s\n", e.v.key, ph, strings.Join(ls, "; "))
			}
		}
	}
	if clean {
		p("None: every call succeeded; after each phase's DELs every host namespace matched its post-warm-up state (links, nftables ruleset, IPAM files) and every container namespace held only `lo`.\n")
	}

	p("\n## Run\n\n| phase | time | load at start → end |\n|---|---|---|\n")
	for _, ph := range r.phases {
		p("| %s | %s | %s → %s |\n", ph.name, ph.dur.Round(100*time.Millisecond), ph.load0, ph.load1)
	}
	p("\nA warm-up ADD/CHECK/DEL per variant (bridge, tables and chains created) precedes all timing. Percentiles are nearest-rank. `make bench` or `go run ./scripts/bench -out bench.md -png bench.png`; `-quick` for a smoke test.\n")
	return b.String()
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ---- machine ----

func machineInfo() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, v, _ := strings.Cut(line, ":")
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %s, %d cores, kernel %s, %s, load at start %s",
		host, cpu, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), loadAvgAll())
}

func loadAvgAll() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// buildInfo describes the nswire binary from its embedded build info.
func buildInfo(orig, path string) string {
	st, err := os.Stat(orig)
	if err != nil {
		return path
	}
	raw, _ := os.ReadFile(path)
	sum := sha256.Sum256(raw)
	desc := fmt.Sprintf("%s built %s, sha256 %x, %.1f MB", orig, st.ModTime().Format("15:04:05"), sum[:6], float64(len(raw))/1e6)
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return desc
	}
	rev, modified, at := "", "", ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			at = s.Value
		}
	}
	if rev != "" {
		desc += fmt.Sprintf(", commit %.10s (%s)", rev, at)
		if modified == "true" {
			desc += " with uncommitted changes"
		}
	}
	return desc
}

type loadSampler struct {
	mu sync.Mutex
	xs []float64
}

func startLoadSampler(ctx context.Context) *loadSampler {
	l := &loadSampler{}
	go func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			if x, err := strconv.ParseFloat(loadAvg1(), 64); err == nil {
				l.mu.Lock()
				l.xs = append(l.xs, x)
				l.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

func (l *loadSampler) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.xs) == 0 {
		return "?"
	}
	s := slices.Clone(l.xs)
	slices.Sort(s)
	return fmt.Sprintf("min %.2f, median %.2f, max %.2f", s[0], s[len(s)/2], s[len(s)-1])
}

// initCell is an inittrace figure, or a dash for a program that is not Go.
func initCell(sp *startProg, v float64) string {
	if len(sp.initTop) == 0 {
		return "–"
	}
	return f2(v)
}
