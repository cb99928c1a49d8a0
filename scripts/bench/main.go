// Command bench times ADD, CHECK and DEL through libcni, the way runtimes
// call plugins, for nswire and the reference plugins side by side in one
// run, each inside its own private "host" namespace.
//
//	go run ./scripts/bench -n 200 -out bench.md
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/nswire/nswire/pkg/testutil"
)

// variant is one plugin chain under test.
type variant struct {
	name    string
	plugins func(h *testutil.Host) []map[string]any
}

func main() {
	n := flag.Int("n", 200, "containers per variant")
	out := flag.String("out", "", "also write the Markdown table here")
	bin := flag.String("bin", "bin", "directory holding the built nswire binaries")
	flag.Parse()
	s := &testutil.Standalone{}
	defer s.Close()
	ref, err := testutil.RefPlugins()
	if err != nil {
		s.Fatalf("%v", err)
	}
	abs, _ := filepath.Abs(*bin)
	var rows []row
	for _, v := range variants() {
		rows = append(rows, measure(s, v, *n, abs, ref))
	}
	table := render(rows, *n)
	fmt.Print(table)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			s.Fatalf("%v", err)
		}
	}
}

func variants() []variant {
	hostLocal := func(h *testutil.Host) map[string]any {
		return map[string]any{"type": "host-local", "dataDir": h.DataDir, "ranges": []any{[]any{map[string]any{"subnet": "10.50.0.0/16"}}}}
	}
	nswireIPAM := func(h *testutil.Host) map[string]any {
		m := hostLocal(h)
		m["type"] = "nswire-ipam"
		return m
	}
	return []variant{
		{"nswire + nswire-ipam", func(h *testutil.Host) []map[string]any {
			return []map[string]any{{"type": "nswire", "bridge": "nswbench0", "ipMasq": false, "ipam": nswireIPAM(h)}}
		}},
		{"nswire + host-local", func(h *testutil.Host) []map[string]any {
			return []map[string]any{{"type": "nswire", "bridge": "nswbench0", "ipMasq": false, "ipam": hostLocal(h)}}
		}},
		{"reference bridge + host-local", func(h *testutil.Host) []map[string]any {
			return []map[string]any{{"type": "bridge", "bridge": "refbench0", "isGateway": true, "ipam": hostLocal(h)}}
		}},
	}
}

type row struct {
	name            string
	add, check, del []time.Duration
	failed          string
}

func measure(s *testutil.Standalone, v variant, n int, bin, ref string) row {
	r := row{name: v.name}
	sub := &testutil.Standalone{}
	defer sub.Close()
	h := testutil.NewHost(sub, bin, ref)
	plugins := v.plugins(h)
	plugins[0]["name"] = "bench"
	list := testutil.ConfList(sub, "1.1.0", plugins...)
	rts := make([]*libcni.RuntimeConf, n)
	for i := range rts {
		rts[i] = testutil.RT(fmt.Sprintf("bench-%d", i), testutil.NewNS(sub), "eth0")
	}
	ctx := context.Background()
	r.add = timeEach(rts, &r.failed, "ADD", func(rt *libcni.RuntimeConf) error {
		_, err := h.CNI.AddNetworkList(ctx, list, rt)
		return err
	})
	r.check = timeEach(rts, &r.failed, "CHECK", func(rt *libcni.RuntimeConf) error { return h.CNI.CheckNetworkList(ctx, list, rt) })
	r.del = timeEach(rts, &r.failed, "DEL", func(rt *libcni.RuntimeConf) error { return h.CNI.DelNetworkList(ctx, list, rt) })
	return r
}

func timeEach(rts []*libcni.RuntimeConf, failed *string, verb string, op func(*libcni.RuntimeConf) error) []time.Duration {
	ds := make([]time.Duration, 0, len(rts))
	for _, rt := range rts {
		start := time.Now()
		if err := op(rt); err != nil {
			if *failed == "" {
				*failed = fmt.Sprintf("%s %s: %v", verb, rt.ContainerID, err)
			}
			continue
		}
		ds = append(ds, time.Since(start))
	}
	return ds
}

func pct(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return fmt.Sprintf("%.2f", float64(s[i].Microseconds())/1000)
}

func render(rows []row, n int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Sequential, %d containers per variant, through libcni, on %s (%s). Times in ms.\n\n", n, host, cpuInfo())
	fmt.Fprintln(&b, "| variant | ADD p50 | ADD p99 | CHECK p50 | CHECK p99 | DEL p50 | DEL p99 |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.name,
			pct(r.add, .5), pct(r.add, .99), pct(r.check, .5), pct(r.check, .99), pct(r.del, .5), pct(r.del, .99))
	}
	for _, r := range rows {
		if r.failed != "" {
			fmt.Fprintf(&b, "\n%s: first failure: %s\n", r.name, r.failed)
		}
	}
	return b.String()
}

func cpuInfo() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown cpu"
	}
	defer f.Close()
	raw, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "model name") {
			_, v, _ := strings.Cut(line, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown cpu"
}
