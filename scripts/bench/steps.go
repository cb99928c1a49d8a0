package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// stepOrder is the order nswire's handlers record their steps in
// (pkg/plugin: t.step); steps not listed follow, sorted.
var stepOrder = map[string][]string{
	"ADD":   {"netns", "owner", "ipam", "bridge", "veth", "container", "firewall"},
	"CHECK": {"ipam", "kernel"},
	"DEL":   {"veth", "firewall", "ipam", "unregister"},
}

// stepTimes reads nswire's log (one JSON line per verb, -steps) and
// collects, for the successful calls whose container ID `keep` accepts,
// each step's duration and the in-process total, by verb.
func (e *env) stepTimes(keep func(id string) bool) (map[string]map[string][]time.Duration, error) {
	f, err := os.Open(e.logFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string][]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg         string                   `json:"msg"`
			ContainerID string                   `json:"containerID"`
			Total       time.Duration            `json:"total"`
			Steps       map[string]time.Duration `json:"steps"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || !keep(l.ContainerID) || strings.Contains(l.Msg, " ") {
			continue
		}
		m := out[l.Msg]
		if m == nil {
			m = map[string][]time.Duration{}
			out[l.Msg] = m
		}
		for k, v := range l.Steps {
			m[k] = append(m[k], v)
		}
		m[" total"] = append(m[" total"], l.Total)
	}
	return out, sc.Err()
}

// stepsMarkdown is the -steps section: where each verb's time goes.
func (r *report) stepsMarkdown() string {
	var b strings.Builder
	for _, e := range r.envs {
		if e.logFile == "" {
			continue
		}
		seq, err := e.stepTimes(func(id string) bool { return strings.HasPrefix(id, "seq-") })
		if err != nil {
			fmt.Fprintf(&b, "- %s: %v\n", e.v.key, err)
			continue
		}
		// The scale phase's first and last 20 ADDs: which step grows.
		var first, last map[string][]time.Duration
		if n := len(e.res.scaleAdd); n > 0 {
			k := min(20, n/2)
			in := func(lo, hi int) func(string) bool {
				return func(id string) bool {
					var i int
					_, err := fmt.Sscanf(id, "scale-%d", &i)
					return err == nil && i >= lo && i < hi
				}
			}
			f, _ := e.stepTimes(in(0, k))
			l, _ := e.stepTimes(in(n-k, n))
			first, last = f["ADD"], l["ADD"]
		}
		rows := []struct {
			label, verb string
			m           map[string][]time.Duration
		}{{"ADD", "ADD", seq["ADD"]}, {"CHECK", "CHECK", seq["CHECK"]}, {"DEL", "DEL", seq["DEL"]},
			{"ADD, scale #1–20", "ADD", first}, {fmt.Sprintf("ADD, scale last 20 of %d", len(e.res.scaleAdd)), "ADD", last}}
		for _, row := range rows {
			verb, m := row.verb, row.m
			if m == nil {
				continue
			}
			var names []string
			for k := range m {
				if k != " total" {
					names = append(names, k)
				}
			}
			sort.Slice(names, func(i, j int) bool {
				a, b := slices.Index(stepOrder[verb], names[i]), slices.Index(stepOrder[verb], names[j])
				if a < 0 || b < 0 {
					if a == b {
						return names[i] < names[j]
					}
					return b < 0
				}
				return a < b
			})
			var cells []string
			for _, n := range names {
				cells = append(cells, fmt.Sprintf("%s %s", n, f2(pct(m[n], .5))))
			}
			total, wall := pct(m[" total"], .5), e.seqP(verb, .5)
			if row.label != verb {
				wall = math.NaN() // only the sequential phase's round trip is at hand
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", e.v.key, row.label, strings.Join(cells, " · "), f2(total), f2(wall), f2(wall-total))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "\n## Where nswire's time goes (-steps: its logFile; sequential phase, and the scale phase's first and last ADDs; p50 of each)\n\n" +
		"| variant | verb | steps | handler total | libcni round trip | outside the handler |\n|---|---|---|---|---|---|\n" + b.String() +
		"\nOutside the handler: fork, exec, Go runtime and package init, config load, result printing, exit, wait, libcni. With -steps nswire also writes its log line on every call.\n"
}
