package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// results of one variant, filled phase by phase.
type results struct {
	seq      map[string][]time.Duration // verb → latencies of the successful calls
	seqUsage map[[2]string]usage        // plugin processes of the sequential phase
	par      []parRun
	scaleAdd []time.Duration // by number of containers already there; <0: failed
	scaleCPU []time.Duration // CPU time of the chain's processes for that ADD
	scaleDel []time.Duration // DEL of the container in that slot, newest first
	leaks    map[string][]string
}

// parRun is one throughput measurement: m containers added, then deleted,
// by `callers` goroutines, in rounds alternating with the other variants.
type parRun struct {
	callers int
	lat     map[string][]time.Duration
	wall    map[string]time.Duration
}

func (p parRun) rate(verb string) float64 {
	if p.wall[verb] <= 0 {
		return 0
	}
	return float64(len(p.lat[verb])) / p.wall[verb].Seconds()
}

// progress prints where the run is, at most every few seconds unless forced.
type progress struct {
	start time.Time
	mu    sync.Mutex
	last  time.Time
}

func (p *progress) say(force bool, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !force && time.Since(p.last) < 5*time.Second {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(os.Stderr, "[%4.0fs load %s] %s\n", time.Since(p.start).Seconds(), loadAvg1(), fmt.Sprintf(format, args...))
}

// rotate yields the variants starting at a different one each time, so that
// no variant always runs right after another's cleanup or on a warm cache.
func rotate(envs []*env, i int) []*env {
	out := make([]*env, 0, len(envs))
	for j := range envs {
		out = append(out, envs[(i+j)%len(envs)])
	}
	return out
}

// warmUp makes each variant's bridge, tables and chains with one
// attachment, removes it, and records the resulting state as the baseline
// the leak checks compare with.
func warmUp(ctx context.Context, envs []*env) {
	for _, e := range envs {
		e.op(ctx, "ADD", "warm", 0)
		e.op(ctx, "CHECK", "warm", 0)
		e.op(ctx, "DEL", "warm", 0)
		e.baseRules, e.baseIPAM = e.rules(), e.ipamFiles()
	}
}

// rssPass takes k containers of each variant through ADD, CHECK and DEL
// via the spawner, for peak RSS alone: none of its calls is timed, and its
// CPU is not counted in any phase's.
func rssPass(ctx context.Context, envs []*env, k int) {
	for _, verb := range []string{"ADD", "CHECK", "DEL"} {
		for i := range k {
			for _, e := range rotate(envs, i) {
				if ctx.Err() != nil {
					return
				}
				if verb != "CHECK" || e.live[i] {
					e.opVia(ctx, e.rssCNI, verb, "rss", i)
				}
			}
		}
	}
	for _, e := range envs {
		e.floorKB = e.rss.sp.floorKB()
		e.res.leaks["peak-RSS"] = e.leaks()
	}
}

// spread says whether the variant, doing k operations over n iterations,
// does one at iteration i, and on which slot: its operations are spread
// evenly over the phase instead of bunched at its start.
func spread(i, n, k int) (int, bool) {
	if k >= n {
		return i, true
	}
	slot := i * k / n
	return slot, (i+1)*k/n > slot
}

func sequential(ctx context.Context, envs []*env, n int, pr *progress) {
	before := map[*env]map[[2]string]usage{}
	for _, e := range envs {
		before[e] = e.exec.snapshot()
	}
	for _, verb := range []string{"ADD", "CHECK", "DEL"} {
		for i := range n {
			pr.say(false, "sequential %s %d/%d", verb, i, n)
			for _, e := range rotate(envs, i) {
				if ctx.Err() != nil {
					return
				}
				slot, ok := spread(i, n, e.seqN)
				if !ok || verb == "CHECK" && !e.live[slot] {
					continue
				}
				if d, ok := e.op(ctx, verb, "seq", slot); ok {
					e.res.seq[verb] = append(e.res.seq[verb], d)
				}
			}
		}
	}
	for _, e := range envs {
		e.res.seqUsage = subUsage(e.exec.snapshot(), before[e])
		e.res.leaks["sequential"] = e.leaks()
	}
}

func parallel(ctx context.Context, envs []*env, callers, rounds int, pr *progress) {
	runs := map[*env]*parRun{}
	for _, e := range envs {
		runs[e] = &parRun{callers: callers, lat: map[string][]time.Duration{}, wall: map[string]time.Duration{}}
	}
	for _, verb := range []string{"ADD", "DEL"} {
		for r := range rounds {
			pr.say(true, "parallel, %d callers: %s round %d/%d", callers, verb, r+1, rounds)
			for _, e := range rotate(envs, r) {
				if ctx.Err() != nil {
					return
				}
				chunk := (e.parN + rounds - 1) / rounds
				lo, hi := r*chunk, min(e.parN, (r+1)*chunk)
				wall, lats := fanOut(callers, lo, hi, func(slot int) (time.Duration, bool) {
					return e.op(ctx, verb, fmt.Sprintf("par%d", callers), slot)
				})
				p := runs[e]
				p.wall[verb] += wall
				p.lat[verb] = append(p.lat[verb], lats...)
			}
		}
	}
	for _, e := range envs {
		e.res.par = append(e.res.par, *runs[e])
		e.res.leaks[fmt.Sprintf("parallel (%d callers)", callers)] = e.leaks()
	}
}

// fanOut runs op for slots lo..hi-1 from `callers` goroutines and returns
// the wall time and the latencies of the calls that succeeded.
func fanOut(callers, lo, hi int, op func(int) (time.Duration, bool)) (time.Duration, []time.Duration) {
	if hi <= lo {
		return 0, nil
	}
	slots := make(chan int, hi-lo)
	for s := lo; s < hi; s++ {
		slots <- s
	}
	close(slots)
	var mu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for s := range slots {
				if d, ok := op(s); ok {
					mu.Lock()
					lats = append(lats, d)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), lats
}

// scale adds containers one after the other to each variant (e.scaleN of
// them, spread over `count` iterations), alternating variants at every
// iteration, and records each ADD's latency against the number of
// containers already attached. nswire's containers
// are then deleted newest first, timed the same way; the reference's are
// left to the removal of its host namespace unless delRef is set (its DEL
// at this size costs minutes).
func scale(ctx context.Context, envs []*env, count int, delRef bool, probe *probePair, probes int, pr *progress) {
	for _, e := range envs {
		e.res.scaleAdd = make([]time.Duration, e.scaleN)
		e.res.scaleCPU = make([]time.Duration, e.scaleN)
		e.res.scaleDel = make([]time.Duration, e.scaleN)
	}
	for i := range count {
		pr.say(false, "scale ADD %d/%d", i, count)
		for _, e := range rotate(envs, i) {
			if ctx.Err() != nil {
				return
			}
			slot, ok := spread(i, count, e.scaleN)
			if !ok {
				continue
			}
			cpu0 := e.exec.cpu()
			d, ok := e.op(ctx, "ADD", "scale", slot)
			if !ok {
				d = -1
			}
			e.res.scaleAdd[slot], e.res.scaleCPU[slot] = d, e.exec.cpu()-cpu0
		}
	}
	if probe != nil {
		probe.run(ctx, probes, pr)
	}
	var dels []*env
	for _, e := range envs {
		if e.v.nswire || delRef {
			dels = append(dels, e)
		}
	}
	for i := count - 1; i >= 0; i-- {
		pr.say(false, "scale DEL %d/%d", count-i, count)
		for _, e := range rotate(dels, i) {
			if ctx.Err() != nil {
				return
			}
			slot, ok := spread(i, count, e.scaleN)
			if !ok {
				continue
			}
			d, ok := e.op(ctx, "DEL", "scale", slot)
			if !ok {
				d = -1
			}
			e.res.scaleDel[slot] = d
		}
	}
	for _, e := range dels {
		e.res.leaks["scale"] = e.leaks()
	}
}

// probePair measures the cost of one more container on the node that holds
// the scale phase's containers against the same on an empty node (its own
// host namespace, same configuration), ADD+DEL pairs alternating between
// the two so that load changes on the machine fall on both alike; the
// curve's first and last ADDs are minutes apart.
type probePair struct {
	full, empty *env
	add, cpu    [2][]time.Duration // [0]: empty node, [1]: full node
}

func (pp *probePair) run(ctx context.Context, n int, pr *progress) {
	nodes := [2]*env{pp.empty, pp.full}
	slots := [2]int{0, pp.full.scaleN} // the full node's spare slot
	for i := range n {
		pr.say(false, "probe %d/%d", i, n)
		for j := range 2 {
			k := (i + j) % 2
			e := nodes[k]
			if ctx.Err() != nil {
				return
			}
			cpu0 := e.exec.cpu()
			d, ok := e.op(ctx, "ADD", "probe", slots[k])
			if ok {
				pp.add[k] = append(pp.add[k], d)
				pp.cpu[k] = append(pp.cpu[k], e.exec.cpu()-cpu0)
				e.op(ctx, "DEL", "probe", slots[k])
			}
		}
	}
	pp.empty.res.leaks["probe"] = pp.empty.leaks()
}

func (pp *probePair) markdown() string {
	var b strings.Builder
	b.WriteString("Alternated probes, after the scale phase's ADDs (the target's measure: the first and last 20 of the curve are minutes apart, and the machine's load moves in between): ADD+DEL of one more container on nswire's node holding ")
	fmt.Fprintf(&b, "%d containers and on an empty node (its own host namespace, same configuration), in turn.\n\n", pp.full.scaleN)
	b.WriteString("| node | probes | ADD p50 | ADD p90 | CPU p50 |\n|---|---|---|---|---|\n")
	for k, name := range []string{"empty", fmt.Sprintf("%d containers", pp.full.scaleN)} {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", name, len(pp.add[k]), f2(pct(pp.add[k], .5)), f2(pct(pp.add[k], .9)), f2(pct(pp.cpu[k], .5)))
	}
	return b.String()
}

func subUsage(after, before map[[2]string]usage) map[[2]string]usage {
	out := map[[2]string]usage{}
	for k, a := range after {
		b := before[k]
		if a.calls > b.calls {
			out[k] = usage{calls: a.calls - b.calls, maxRSSKB: a.maxRSSKB, cpu: a.cpu - b.cpu}
		}
	}
	return out
}

func loadAvg1() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
