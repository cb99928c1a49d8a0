package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"
)

// startProg is one binary whose start-up is timed.
type startProg struct {
	name, path string
	lat        []time.Duration // VERSION round trips
	cpu        []time.Duration // their user + system time
	rssKB      int64
	initSum    []float64 // ms: sum of the package inits' clock times, per run
	initEnd    []float64 // ms since process start when the last init ended
	initBytes  []float64
	initTop    map[string]float64 // package → clock ms summed over the runs
}

// buildEmpty builds `func main() {}` with the same toolchain: the floor
// any Go plugin pays to exist.
func buildEmpty(dir string) (string, error) {
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "empty")
	cmd := exec.Command("go", "build", "-o", out, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GO111MODULE=on")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build empty program: %v\n%s", err, b)
	}
	return out, nil
}

// startup times CNI_COMMAND=VERSION round trips (fork, exec, runtime and
// package init, reply, exit, wait) of each program, exec'd by this process
// and alternating programs at every round, then runs each with
// GODEBUG=inittrace=1, then rssRuns times through the spawner for its
// peak RSS (untimed).
func startup(ctx context.Context, sp *spawner, progs []*startProg, rounds, traceRuns, rssRuns int) error {
	stdin := []byte(`{"cniVersion":"1.1.0"}`)
	env := []string{"CNI_COMMAND=VERSION", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	run := func(p *startProg, extraEnv ...string) (time.Duration, []byte, error) {
		start := time.Now()
		_, stderr, st, err := runIn(ctx, nil, p.path, stdin, append(slices.Clip(env), extraEnv...))
		d := time.Since(start)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, stderr)
		} else if len(extraEnv) == 0 {
			p.cpu = append(p.cpu, st.UserTime()+st.SystemTime())
		}
		return d, stderr, err
	}
	for r := range rounds {
		for j := range progs {
			p := progs[(r+j)%len(progs)]
			d, _, err := run(p)
			if err != nil {
				return fmt.Errorf("%s VERSION: %v", p.name, err)
			}
			p.lat = append(p.lat, d)
		}
	}
	for r := range traceRuns {
		for j := range progs {
			p := progs[(r+j)%len(progs)]
			_, stderr, err := run(p, "GODEBUG=inittrace=1")
			if err != nil {
				return fmt.Errorf("%s inittrace: %v", p.name, err)
			}
			sum, end, bytes, per := parseInittrace(stderr)
			p.initSum = append(p.initSum, sum)
			p.initEnd = append(p.initEnd, end)
			p.initBytes = append(p.initBytes, bytes)
			if p.initTop == nil {
				p.initTop = map[string]float64{}
			}
			for k, v := range per {
				p.initTop[k] += v
			}
		}
	}
	for range rssRuns {
		for _, p := range progs {
			r, err := sp.run(ctx, p.path, stdin, env)
			if err == nil && r.code != 0 {
				err = fmt.Errorf("%s: %s", r.msg, r.stderr)
			}
			if err != nil {
				return fmt.Errorf("%s VERSION through the spawner: %v", p.name, err)
			}
			p.rssKB = max(p.rssKB, r.rssKB)
		}
	}
	return nil
}

var initLine = regexp.MustCompile(`^init (\S+) @([0-9.]+) ms, ([0-9.]+) ms clock, ([0-9]+) bytes, ([0-9]+) allocs`)

// parseInittrace sums the clock time and bytes of every package init.
func parseInittrace(stderr []byte) (sum, end, bytes float64, per map[string]float64) {
	per = map[string]float64{}
	sc := bufio.NewScanner(bytesReader(stderr))
	for sc.Scan() {
		m := initLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, _ := strconv.ParseFloat(m[2], 64)
		clock, _ := strconv.ParseFloat(m[3], 64)
		b, _ := strconv.ParseFloat(m[4], 64)
		sum += clock
		bytes += b
		end = max(end, at+clock)
		per[m[1]] += clock
	}
	return sum, end, bytes, per
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// topInits names the packages whose init costs the most.
func (p *startProg) topInits(k int) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for n, v := range p.initTop {
		all = append(all, kv{n, v / float64(max(1, len(p.initSum)))})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var s string
	for i, e := range all {
		if i == k || e.v < 0.005 {
			break
		}
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s %.2f", e.k, e.v)
	}
	return s
}

func medianF(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
