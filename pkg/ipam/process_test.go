package ipam

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var crashRuns = flag.Int("ipam.crashes", 300, "processes killed by the crash test (env NSWIRE_IPAM_CRASHES overrides)")

const hostLocal = "/usr/lib/cni/host-local"

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// pluginBinary builds nswire-ipam once per test run, with crash points.
func pluginBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nswire-ipam-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "nswire-ipam")
		out, err := exec.Command("go", "build", "-tags", "ipamcrash", "-o", builtBin,
			"github.com/nswire/nswire/plugins/ipam/nswire-ipam").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// pluginCmd prepares a CNI invocation of bin.
func pluginCmd(bin, command, id string, conf []byte, env ...string) *exec.Cmd {
	cmd := exec.Command(bin)
	cmd.Env = append([]string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0",
		"CNI_NETNS=/var/run/netns/test", "CNI_PATH=/usr/lib/cni", "PATH=" + os.Getenv("PATH"),
	}, env...)
	cmd.Stdin = bytes.NewReader(conf)
	return cmd
}

// addIPs runs ADD and returns the addresses of the result.
func addIPs(t testing.TB, cmd *exec.Cmd) ([]string, error) {
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("bad ADD output %q: %v", out, err)
	}
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, strings.Split(ip.Address, "/")[0])
	}
	return ips, nil
}

func crashCount() int {
	if n, err := strconv.Atoi(os.Getenv("NSWIRE_IPAM_CRASHES")); err == nil {
		return n
	}
	return *crashRuns
}

type fate int

const (
	fateAdded   fate = iota // ADD returned success
	fateUnknown             // ADD or DEL killed midway
	fateDeleted             // DEL returned success
)

// TestCrashSafety kills nswire-ipam at random instants of ADD and DEL,
// either at a crash point (every step of a write) or by an external
// SIGKILL at a random delay, then checks the invariants.
func TestCrashSafety(t *testing.T) {
	bin := pluginBinary(t)
	dir := t.TempDir()
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/16"}],[{"subnet":"fd00::/112"}]]`)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	model := map[string]fate{}
	got := map[string][]string{}
	var live []string
	killed := 0
	for i := range crashCount() {
		id, command := fmt.Sprintf("c%d", i), "ADD"
		if len(live) > 0 && rng.IntN(3) == 0 {
			k := rng.IntN(len(live))
			id, command = live[k], "DEL"
			live = slices.Delete(live, k, k+1)
		}
		ips, ok := runMaybeKilled(t, rng, pluginCmd(bin, command, id, conf, crashEnv(rng)...))
		switch {
		case !ok:
			killed++
			model[id] = fateUnknown
		case command == "ADD":
			model[id], got[id] = fateAdded, ips
			live = append(live, id)
		default:
			model[id] = fateDeleted
		}
	}
	t.Logf("%d runs, %d killed", crashCount(), killed)
	checkInvariants(t, filepath.Join(dir, "testnet"), model, got, false)

	// Recover as a runtime would: DEL what it is unsure of, then GC.
	var valid []string
	for id, f := range model {
		if f == fateUnknown {
			if out, err := pluginCmd(bin, "DEL", id, conf).CombinedOutput(); err != nil {
				t.Fatalf("DEL %s: %v %s", id, err, out)
			}
			model[id] = fateDeleted
		}
		if f == fateAdded {
			valid = append(valid, fmt.Sprintf(`{"containerID":%q,"ifname":"eth0"}`, id))
		}
	}
	gcConf := netConf(t, dir, `[[{"subnet":"10.0.0.0/16"}],[{"subnet":"fd00::/112"}]]`,
		`"cni.dev/valid-attachments":[`+strings.Join(valid, ",")+`]`)
	if err := GC(req(gcConf, "", "")); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, filepath.Join(dir, "testnet"), model, got, true)
}

// crashEnv picks a crash point: ADD (dual stack) passes 6, DEL 3; numbers
// past the end let the run finish.
func crashEnv(rng *rand.Rand) []string {
	if rng.IntN(2) == 0 {
		return nil
	}
	return []string{"NSWIRE_IPAM_CRASH_AT=" + strconv.Itoa(rng.IntN(7)+1)}
}

// runMaybeKilled runs cmd, sending SIGKILL after a random delay half of
// the time. ok reports a clean, successful exit.
func runMaybeKilled(t *testing.T, rng *rand.Rand, cmd *exec.Cmd) ([]string, bool) {
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if rng.IntN(2) == 0 {
		time.Sleep(time.Duration(rng.IntN(8000)) * time.Microsecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
	}
	if err := cmd.Wait(); err != nil {
		if cmd.ProcessState.Exited() {
			t.Fatalf("plugin failed without being killed: %v %s", err, out.String())
		}
		return nil, false
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	_ = json.Unmarshal(out.Bytes(), &res)
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, strings.Split(ip.Address, "/")[0])
	}
	return ips, true
}

// checkInvariants reads the directory raw: no address has two owners (one
// file per address) and no owner two addresses of a family; every
// reservation is reachable from its owner's index; successful ADDs hold
// what they returned, successful DELs hold nothing. Unless strict, an
// index entry of a killed run may point to a missing file.
func checkInvariants(t *testing.T, netDir string, model map[string]fate, got map[string][]string, strict bool) {
	t.Helper()
	files := readReservations(t, netDir)
	index := readIndexFiles(t, netDir)
	perOwner := map[Attachment][]string{}
	for ip, owner := range files {
		perOwner[owner] = append(perOwner[owner], ip)
		if !slices.Contains(index[owner], ip) {
			t.Errorf("reservation %s of %v unaccounted: index has %v", ip, owner, index[owner])
		}
	}
	for owner, ips := range perOwner {
		if v4, v6 := countFamilies(ips); v4 > 1 || v6 > 1 {
			t.Errorf("%v holds %v", owner, ips)
		}
		if _, known := model[owner.ContainerID]; !known {
			t.Errorf("reservation for unknown attachment %v", owner)
		}
	}
	for owner, ips := range index {
		for _, ip := range ips {
			if files[ip] != owner && (strict || model[owner.ContainerID] != fateUnknown) {
				t.Errorf("index of %v points to %s owned by %v", owner, ip, files[ip])
			}
		}
	}
	for id, f := range model {
		held := perOwner[Attachment{id, "eth0"}]
		slices.Sort(held)
		want := slices.Clone(got[id])
		slices.Sort(want)
		switch f {
		case fateAdded:
			if !slices.Equal(held, want) {
				t.Errorf("%s: ADD returned %v, store holds %v", id, want, held)
			}
		case fateDeleted:
			if len(held) > 0 {
				t.Errorf("%s: deleted but holds %v", id, held)
			}
		}
	}
}

func countFamilies(ips []string) (v4, v6 int) {
	for _, ip := range ips {
		if strings.Contains(ip, ":") {
			v6++
		} else {
			v4++
		}
	}
	return v4, v6
}

func readReservations(t *testing.T, netDir string) map[string]Attachment {
	t.Helper()
	entries, err := os.ReadDir(netDir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Attachment{}
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(netDir, e.Name()))
		owner, err := decodeOwner(data)
		if err != nil {
			t.Errorf("corrupt reservation %s: %q", e.Name(), data)
		}
		out[e.Name()] = owner
	}
	return out
}

func readIndexFiles(t *testing.T, netDir string) map[Attachment][]string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(netDir, indexDirName))
	out := map[Attachment][]string{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), indexPrefix) {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(netDir, indexDirName, e.Name()))
		a, ips, err := decodeIndex(data)
		if err != nil || indexName(a) != e.Name() {
			t.Errorf("corrupt index %s: %q", e.Name(), data)
			continue
		}
		for _, ip := range ips {
			out[a] = append(out[a], ip.String())
		}
	}
	return out
}

// TestConcurrentProcesses: 100 plugin processes ADD at once on one range.
func TestConcurrentProcesses(t *testing.T) {
	bin := pluginBinary(t)
	dir := t.TempDir()
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	const n = 100
	ips := make([][]string, n)
	parallel(n, func(i int) {
		var err error
		if ips[i], err = addIPs(t, pluginCmd(bin, "ADD", fmt.Sprintf("p%d", i), conf)); err != nil {
			t.Errorf("ADD %d: %v", i, err)
		}
	})
	seen := map[string]int{}
	for i, list := range ips {
		if len(list) != 1 {
			t.Fatalf("ADD %d returned %v", i, list)
		}
		if j, dup := seen[list[0]]; dup {
			t.Fatalf("%s given to p%d and p%d", list[0], j, i)
		}
		seen[list[0]] = i
	}
	if files := readReservations(t, filepath.Join(dir, "testnet")); len(files) != n {
		t.Fatalf("%d reservation files, want %d", len(files), n)
	}
	parallel(n, func(i int) {
		if out, err := pluginCmd(bin, "DEL", fmt.Sprintf("p%d", i), conf).CombinedOutput(); err != nil {
			t.Errorf("DEL %d: %v %s", i, err, out)
		}
	})
	assertOnlyBookkeeping(t, filepath.Join(dir, "testnet"))
}

func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); fn(i) }()
	}
	wg.Wait()
}

// TestMigrationFromHostLocal: host-local's reference binary allocates, then
// nswire-ipam takes over the same dataDir.
func TestMigrationFromHostLocal(t *testing.T) {
	if _, err := os.Stat(hostLocal); err != nil {
		t.Skip("host-local not installed (apt-get install containernetworking-plugins)")
	}
	bin := pluginBinary(t)
	dir := t.TempDir()
	conf := func(typ string) []byte {
		return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"mig","ipam":{"type":%q,"dataDir":%q,"ranges":[[{"subnet":"10.5.0.0/24"}]]}}`, typ, dir))
	}
	old := map[string]string{}
	for _, id := range []string{"h1", "h2", "h3"} {
		ips, err := addIPs(t, pluginCmd(hostLocal, "ADD", id, conf("host-local")))
		if err != nil {
			t.Fatalf("host-local ADD: %v", err)
		}
		old[id] = ips[0]
	}
	for id, ip := range old {
		if out, err := pluginCmd(bin, "CHECK", id, conf("nswire-ipam")).CombinedOutput(); err != nil {
			t.Fatalf("CHECK %s after migration: %v %s", id, err, out)
		}
		ips, err := addIPs(t, pluginCmd(bin, "ADD", id, conf("nswire-ipam")))
		if err != nil || ips[0] != ip {
			t.Fatalf("ADD %s again = %v %v, want %s", id, ips, err, ip)
		}
	}
	for i := range 5 {
		ips, err := addIPs(t, pluginCmd(bin, "ADD", fmt.Sprintf("n%d", i), conf("nswire-ipam")))
		if err != nil {
			t.Fatal(err)
		}
		for id, ip := range old {
			if ips[0] == ip {
				t.Fatalf("new ADD got %s, held by %s", ip, id)
			}
		}
	}
	if out, err := pluginCmd(bin, "DEL", "h1", conf("nswire-ipam")).CombinedOutput(); err != nil {
		t.Fatalf("DEL: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "mig", old["h1"])); !os.IsNotExist(err) {
		t.Fatal("DEL did not release host-local's reservation")
	}
}
