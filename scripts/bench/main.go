// Command bench measures nswire against the reference plugin chain
// (bridge + host-local + portmap + firewall, v1.10.0) with the same
// features (bridge, masquerade, one published port per container, IPv4
// and dual-stack) in one run, through libcni, each variant inside its own
// private "host" namespace:
//
//   - ADD, CHECK, DEL latency, sequential;
//   - throughput with 1 and 8 parallel callers;
//   - ADD latency against the number of containers already attached (-scale);
//   - CPU of each plugin process (from wait4's rusage);
//   - start-up: CNI_COMMAND=VERSION round trip against an empty Go program,
//     and GODEBUG=inittrace=1;
//   - peak RSS of each plugin, from a separate untimed pass (-rss-n).
//
// Every timed call is made as a runtime makes it: this process execs the
// plugin itself (plainExec). Only the RSS pass goes through the spawner
// (spawner/main.go says why), and none of its calls is timed.
//
// Variants are interleaved at every container (sequential, scale) or every
// round (parallel), so that load from other users of the machine falls on
// all of them alike. It writes a Markdown report (-out) and a plot of ADD
// latency against the number of containers (-png).
//
//	go run ./scripts/bench -out bench.md -png bench.png   # about 10 minutes
//	go run ./scripts/bench -quick                         # smoke test, under 2 minutes
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nswire/nswire/pkg/testutil"
)

type options struct {
	n, parN, scaleN, rounds int
	probes                  int
	refN, refPar, refScale  int
	scaleDual               bool
	callers                 []int
	startRounds, traceRuns  int
	rssN                    int
	refDual, scaleDelRef    bool
	refBackend              string
	out, png, bin           string
	quick, steps            bool
}

func parseFlags() options {
	var o options
	flag.IntVar(&o.n, "n", 200, "containers nswire takes through the sequential ADD/CHECK/DEL phase")
	flag.IntVar(&o.refN, "ref-n", 40, "containers the reference takes through it (reference dual-stack: half)")
	flag.IntVar(&o.parN, "par", 200, "containers nswire adds then deletes in each parallel run")
	flag.IntVar(&o.refPar, "ref-par", 32, "containers the reference adds then deletes in each parallel run (0: skip)")
	flag.IntVar(&o.scaleN, "scale", 1000, "containers nswire adds one after the other in the scale phase (0: skip)")
	flag.IntVar(&o.refScale, "ref-scale", 150, "containers the reference adds in the scale phase, spread over it (about 0.5 s each here; 0: skip)")
	flag.BoolVar(&o.scaleDual, "scale-dual", false, "nswire dual-stack takes part in the scale phase too")
	flag.IntVar(&o.probes, "probes", 40, "after the scale phase's ADDs, ADD+DEL pairs alternated between nswire's full node and an empty one (0: skip)")
	flag.IntVar(&o.rounds, "rounds", 4, "rounds each parallel run is split into, alternating variants")
	callers := flag.String("callers", "1,8", "parallel callers, comma separated")
	flag.IntVar(&o.startRounds, "startup", 200, "VERSION round trips per program")
	flag.IntVar(&o.traceRuns, "inittrace", 20, "GODEBUG=inittrace=1 runs per program")
	flag.IntVar(&o.rssN, "rss-n", 10, "containers each variant takes through ADD/CHECK/DEL in the untimed peak-RSS pass (and VERSION runs per program)")
	flag.BoolVar(&o.refDual, "ref-dual", true, "also run the reference chain dual-stack (sequential phase only)")
	flag.BoolVar(&o.scaleDelRef, "scale-del-ref", false, "also time the reference's DELs after the scale phase (slow)")
	flag.StringVar(&o.refBackend, "ref-backend", "", `reference ipMasq/portmap backend: "" (their default: iptables), "iptables" or "nftables"`)
	flag.StringVar(&o.out, "out", "", "write the Markdown report here")
	flag.StringVar(&o.png, "png", "", "write the ADD-latency-against-containers plot here")
	flag.StringVar(&o.bin, "bin", "bin", "directory holding the built nswire binaries")
	flag.BoolVar(&o.steps, "steps", false, "have nswire log the time of each step (its logFile) and report them; costs nswire a little per call")
	flag.BoolVar(&o.quick, "quick", false, "smoke-test sizes: -n 30 -ref-n 8 -par 40 -ref-par 16 -scale 100 -ref-scale 20 -rounds 2 -startup 40 -inittrace 5 -probes 10 -rss-n 3 (explicit flags win)")
	flag.Parse()
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]int{"n": 30, "ref-n": 8, "par": 40, "ref-par": 16, "scale": 100, "ref-scale": 20, "rounds": 2, "startup": 40, "inittrace": 5, "probes": 10, "rss-n": 3}
		for name, v := range map[string]*int{"n": &o.n, "ref-n": &o.refN, "par": &o.parN, "ref-par": &o.refPar, "scale": &o.scaleN,
			"ref-scale": &o.refScale, "rounds": &o.rounds, "startup": &o.startRounds, "inittrace": &o.traceRuns, "probes": &o.probes, "rss-n": &o.rssN} {
			if !set[name] {
				*v = quick[name]
			}
		}
	}
	for _, f := range splitComma(*callers) {
		var c int
		if _, err := fmt.Sscan(f, &c); err != nil || c < 1 {
			fmt.Fprintf(os.Stderr, "bad -callers %q\n", *callers)
			os.Exit(2)
		}
		o.callers = append(o.callers, c)
	}
	o.n, o.parN, o.rounds, o.refN = max(o.n, 1), max(o.parN, 1), max(o.rounds, 1), min(max(o.refN, 1), max(o.n, 1))
	o.refScale = min(o.refScale, o.scaleN)
	o.rssN = max(o.rssN, 1)
	return o
}

// benchT is testutil's T for this program: a fatal error runs every
// cleanup once (namespaces, temp dirs) before exiting.
type benchT struct {
	*testutil.Standalone
	closeAll func()
}

func (b *benchT) Fatalf(format string, args ...any) {
	b.Errorf(format, args...)
	b.closeAll()
	os.Exit(1)
}

func main() {
	o := parseFlags()
	s := &testutil.Standalone{}
	t := &benchT{Standalone: s, closeAll: sync.OnceFunc(s.Close)}
	ctx, cancel := context.WithCancel(context.Background())
	// Everything the run makes lives in namespaces and temp dirs registered
	// as cleanups: run them on Ctrl-C, SIGTERM, a fatal error or a panic.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		cancel()
		fmt.Fprintf(os.Stderr, "\n%v: removing namespaces and temp dirs\n", sig)
		t.closeAll()
		os.Exit(130)
	}()
	defer func() {
		if r := recover(); r != nil {
			t.closeAll()
			panic(r)
		}
	}()
	defer t.closeAll()

	r := run(ctx, t, o)
	if ctx.Err() != nil {
		select {} // interrupted: the signal handler cleans up and exits
	}
	md := r.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			t.Fatalf("%v", err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", o.out)
	}
	if o.png != "" && len(r.scaleEnvs) > 0 {
		if err := writePlot(o.png, r); err != nil {
			t.Fatalf("plot: %v", err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", o.png)
	}
}

func run(ctx context.Context, t *benchT, o options) *report {
	pr := &progress{start: time.Now()}
	r := &report{opts: o, machine: machineInfo(), started: time.Now()}
	r.loads = startLoadSampler(ctx)
	ref, err := testutil.RefPlugins()
	if err != nil {
		t.Fatalf("%v", err)
	}
	// A private copy: the binaries under test cannot change mid-run when
	// someone rebuilds bin/.
	bin := t.TempDir()
	for _, b := range []string{"nswire", "nswire-ipam"} {
		if err := copyFile(filepath.Join(o.bin, b), filepath.Join(bin, b)); err != nil {
			t.Fatalf("%v (build first: go build -o bin/ ./plugins/main/nswire ./plugins/ipam/nswire-ipam)", err)
		}
	}
	r.build = buildInfo(filepath.Join(o.bin, "nswire"), filepath.Join(bin, "nswire"))
	phase := func(name string, f func()) {
		if ctx.Err() != nil {
			return
		}
		p := phaseInfo{name: name, load0: loadAvg1()}
		pr.say(true, "%s", name)
		start := time.Now()
		f()
		p.dur, p.load1 = time.Since(start), loadAvg1()
		r.phases = append(r.phases, p)
	}

	tools := t.TempDir()
	spawnerPath, err := buildSpawner(tools)
	if err != nil {
		t.Fatalf("%v", err)
	}
	phase("start-up", func() {
		empty, err := buildEmpty(tools)
		if err != nil {
			t.Fatalf("%v", err)
		}
		r.startup = []*startProg{
			{name: "nswire", path: filepath.Join(bin, "nswire")},
			{name: "nswire-ipam", path: filepath.Join(bin, "nswire-ipam")},
			{name: "empty Go program", path: empty},
			{name: "reference bridge", path: filepath.Join(ref, "bridge")},
		}
		if _, err := os.Stat("/bin/true"); err == nil {
			// The floor of any exec on this machine, Go or not.
			r.startup = append(r.startup, &startProg{name: "/bin/true", path: "/bin/true"})
		}
		sp := startSpawner(t, spawnerPath, nil)
		if err := startup(ctx, sp, r.startup, o.startRounds, o.traceRuns, o.rssN); err != nil {
			t.Fatalf("start-up: %v", err)
		}
		r.startFloorKB = sp.floorKB()
	})

	phase("namespaces and warm-up", func() {
		for _, v := range variants(o.refDual, o.refBackend) {
			var seqN, parN, scaleN int
			switch {
			case v.nswire:
				seqN, parN = o.n, o.parN
				if !v.dual || o.scaleDual {
					scaleN = o.scaleN
				}
			case !v.dual:
				seqN, parN, scaleN = o.refN, o.refPar, o.refScale
			default:
				seqN = max(1, o.refN/2)
			}
			probe := v.nswire && !v.dual && scaleN > 0 && o.probes > 0
			slots := max(seqN, parN, scaleN, o.rssN)
			if probe {
				slots = max(slots, scaleN+1) // the probes' spare slot
			}
			e := newEnv(t, v, []string{bin, ref}, slots, spawnerPath, o.steps)
			e.seqN, e.parN, e.scaleN = seqN, parN, scaleN
			r.envs = append(r.envs, e)
			if parN > 0 {
				r.parEnvs = append(r.parEnvs, e)
			}
			if scaleN > 0 {
				r.scaleEnvs = append(r.scaleEnvs, e)
			}
			if probe {
				empty := v
				empty.key = v.key + ", empty node"
				r.probe = &probePair{full: e, empty: newEnv(t, empty, []string{bin, ref}, 1, spawnerPath, false)}
			}
		}
		warmUp(ctx, r.envs)
		if r.probe != nil {
			warmUp(ctx, []*env{r.probe.empty})
		}
	})
	phase(fmt.Sprintf("peak RSS: %d ADD/CHECK/DEL per variant through the spawner, untimed", o.rssN), func() { rssPass(ctx, r.envs, o.rssN) })
	phase(fmt.Sprintf("sequential ADD/CHECK/DEL of %d containers (reference %d)", o.n, o.refN), func() { sequential(ctx, r.envs, o.n, pr) })
	for _, c := range o.callers {
		phase(fmt.Sprintf("%d parallel callers, %d containers (reference %d)", c, o.parN, o.refPar), func() { parallel(ctx, r.parEnvs, c, o.rounds, pr) })
	}
	if len(r.scaleEnvs) > 0 {
		phase(fmt.Sprintf("scale: %d containers (reference %d), %d alternated probes", o.scaleN, o.refScale, o.probes), func() {
			scale(ctx, r.scaleEnvs, o.scaleN, o.scaleDelRef, r.probe, o.probes, pr)
		})
	}
	r.finished = time.Now()
	pr.say(true, "done in %s", r.finished.Sub(r.started).Round(time.Second))
	return r
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
