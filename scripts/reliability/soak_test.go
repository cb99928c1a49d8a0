package reliability

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nswire/nswire/pkg/testutil"
)

// soakSlot is one (container, network) pair a worker may attach.
type soakSlot struct {
	ns    *testutil.NS
	ctr   string // container name, unique in the test
	net   *network
	ifn   string
	index int
	live  *att // nil when detached
	seq   int
}

// TestSoak runs random ADD, DEL, CHECK and GC from 8 concurrent callers
// over three networks (IPv4 bridge with published ports, IPv6 routed,
// dual-stack bridge with bandwidth), 6 containers per caller. Like a runtime, a worker never runs two operations on one
// container at once and GC excludes ADD/DEL/CHECK. Invariants: every op
// succeeds; no address is ever held by two live attachments; every CHECK
// passes; every 50 ops, quiesced, the host holds exactly the live
// attachments (links, chains, reservations) and two live containers
// talk; at the end nothing is left. NSWIRE_SOAK_OPS=n (default 300).
func TestSoak(t *testing.T) {
	total := envInt("NSWIRE_SOAK_OPS", 300)
	const workers, containersPerWorker, checkEvery = 8, 2, 50
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("NSWIRE_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (NSWIRE_SEED to replay the op mix; timing differs)", seed)

	r := newRig(t)
	n4 := r.newNetwork(false, "10.81.0.0/24")
	n6 := r.newNetwork(true, "fd81::/64")
	nd := r.newNetwork(false, "10.82.0.0/24", "fd82::/64")
	nets := []*network{n4, n6, nd}
	reg := &registry{}
	r.tidy(func() []*network { return nets }, reg)

	var mu sync.Mutex // guards slots' live fields and the address map
	var slots [][]*soakSlot
	for w := 0; w < workers; w++ {
		var mine []*soakSlot
		for c := 0; c < containersPerWorker; c++ {
			for i, n := range nets {
				// One namespace per network: a second network's default
				// route collides with the first's (see
				// TestSecondNetworkDefaultRoute).
				mine = append(mine, &soakSlot{ns: testutil.NewNS(t), ctr: fmt.Sprintf("w%dc%dn%d", w, c, i), net: n,
					ifn: "eth0", index: len(slots)*100 + len(mine)})
			}
		}
		slots = append(slots, mine)
	}
	liveAtts := func() []*att {
		mu.Lock()
		defer mu.Unlock()
		var out []*att
		for _, ws := range slots {
			for _, s := range ws {
				if s.live != nil {
					out = append(out, s.live)
				}
			}
		}
		return out
	}
	holder := map[string]*att{} // address -> live attachment

	var gcLock sync.RWMutex
	var done, failures atomic.Int64
	counts := map[string]*atomic.Int64{"ADD": {}, "DEL": {}, "CHECK": {}, "GC": {}, "checks": {}}
	fail := func(format string, a ...any) {
		failures.Add(1)
		t.Errorf(format, a...)
	}
	quiesced := func(when string) {
		gcLock.Lock()
		defer gcLock.Unlock()
		counts["checks"].Add(1)
		live := liveAtts()
		d, err := r.diff(nets, live)
		if err != nil {
			fail("%s: %v", when, err)
		}
		for _, line := range d {
			fail("%s: %s", when, line)
		}
		var pairs = map[*network][]*att{}
		for _, a := range live {
			if err := r.check(a); err != nil {
				fail("%s: CHECK %s: %v", when, a, err)
			}
			pairs[a.net] = append(pairs[a.net], a)
		}
		for n, as := range pairs {
			if len(as) >= 2 && as[0].ns != as[1].ns {
				if err := r.works(as[0], as[1]); err != nil {
					fail("%s: %s: %v", when, n.name, err)
				}
			}
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for failures.Load() < 10 {
				k := done.Add(1)
				if k > int64(total) {
					return
				}
				if k%checkEvery == 0 {
					quiesced(fmt.Sprintf("after op %d", k))
				}
				s := slots[w][rng.IntN(len(slots[w]))]
				op := "ADD"
				if s.live != nil {
					op = []string{"DEL", "DEL", "CHECK", "CHECK", "GC"}[rng.IntN(5)]
				}
				counts[op].Add(1)
				if op == "GC" {
					gcLock.Lock()
					if _, err := r.run(r.gcCall(s.net, liveAtts())); err != nil {
						fail("GC %s: %v", s.net.name, err)
					}
					gcLock.Unlock()
					continue
				}
				gcLock.RLock()
				switch op {
				case "ADD":
					s.seq++
					a := &att{net: s.net, id: fmt.Sprintf("%sg%d", s.ctr, s.seq), ifname: s.ifn, ns: s.ns, rc: map[string]any{}}
					switch {
					case s.net == n4:
						a.rc["portMappings"] = ports(10000+s.index, 80)
					case s.net == nd && rng.IntN(2) == 0:
						a.rc["bandwidth"] = fastBandwidth
					}
					reg.put(a)
					if err := r.add(a); err != nil {
						fail("ADD %s: %v", a, err)
						break
					}
					mu.Lock()
					for _, ipc := range a.res.IPs {
						key := ipc.Address.IP.String()
						if other := holder[key]; other != nil {
							fail("address %s handed to %s while %s holds it", key, a, other)
						}
						holder[key] = a
					}
					s.live = a
					mu.Unlock()
				case "DEL":
					a := s.live
					mu.Lock()
					s.live = nil
					for _, ipc := range a.res.IPs {
						delete(holder, ipc.Address.IP.String())
					}
					mu.Unlock()
					if _, err := r.run(r.delCall(a)); err != nil {
						fail("DEL %s: %v", a, err)
					} else {
						reg.drop(a)
					}
				case "CHECK":
					if err := r.check(s.live); err != nil {
						fail("CHECK %s: %v", s.live, err)
					}
				}
				gcLock.RUnlock()
			}
		}(w)
	}
	wg.Wait()
	quiesced("at the end")
	t.Logf("%d ops in %v from %d workers: ADD %d, DEL %d, CHECK %d, GC %d; %d quiesced full checks; %d failures",
		min(done.Load(), int64(total)), time.Since(start).Round(time.Millisecond), workers,
		counts["ADD"].Load(), counts["DEL"].Load(), counts["CHECK"].Load(), counts["GC"].Load(), counts["checks"].Load(), failures.Load())
	for _, a := range liveAtts() {
		r.mustDel(a)
		reg.drop(a)
	}
	r.assertExactly(nets, nil)
	r.host.AssertNoLeaks()
	for _, ws := range slots {
		for _, s := range ws {
			if err := onlyLo(s.ns); err != nil {
				t.Error(err)
			}
		}
	}
}
