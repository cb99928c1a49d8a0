package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/nswire/nswire/pkg/testutil"
)

// usage is what the kernel reports about the plugin processes of one
// binary and verb: CPU time and, from the spawner only, peak RSS (which
// for a process that ran children, like the reference bridge running
// host-local or portmap running iptables, is the max over it and its
// waited-for descendants).
type usage struct {
	calls    int
	maxRSSKB int64
	cpu      time.Duration // user + system, children included
}

// acct adds up the usage of every plugin process an Exec ran.
type acct struct {
	mu       sync.Mutex
	usage    map[[2]string]*usage // {binary, verb}
	totalCPU time.Duration
}

func (a *acct) record(bin, verb string, rssKB int64, cpu time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.usage == nil {
		a.usage = map[[2]string]*usage{}
	}
	u := a.usage[[2]string{bin, verb}]
	if u == nil {
		u = &usage{}
		a.usage[[2]string{bin, verb}] = u
	}
	u.calls++
	u.maxRSSKB = max(u.maxRSSKB, rssKB)
	u.cpu += cpu
	a.totalCPU += cpu
}

// cpu is the CPU time of every process run so far.
func (a *acct) cpu() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.totalCPU
}

// snapshot copies the counters, so a phase can subtract the ones before it.
func (a *acct) snapshot() map[[2]string]usage {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[[2]string]usage, len(a.usage))
	for k, v := range a.usage {
		m[k] = *v
	}
	return m
}

// plainExec is the libcni Exec every latency, throughput and CPU figure
// comes from. It runs a plugin the way a runtime does: containerd and
// podman fork it from their own process in the host namespace; this
// process forks it from a thread locked and switched into the variant's
// private host namespace (as pkg/testutil's driver does), so bridges, veth
// host ends, sysctls and nftables land there. The os/exec calls are
// invoke.RawExec's; the only addition is reading the rusage that os/exec's
// wait4 already collected: its CPU time is the plugin's (children
// included), its ru_maxrss is not (see spawner/main.go), so it is dropped.
type plainExec struct {
	version.PluginDecoder
	host ns.NetNS
	acct
}

func (e *plainExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *plainExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	stdout, stderr, st, err := runIn(ctx, e.host, path, stdin, env)
	if st != nil {
		e.record(filepath.Base(path), verbOf(env), 0, st.UserTime()+st.SystemTime())
	}
	if err != nil {
		return nil, pluginErr(err.Error(), stdout, stderr)
	}
	return stdout, nil
}

// runIn runs path from a thread switched into netns (nil: this process's
// own) and waits for it.
func runIn(ctx context.Context, netns ns.NetNS, path string, stdin []byte, env []string) (stdout, stderr []byte, st *os.ProcessState, err error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if netns == nil {
		err = cmd.Run()
	} else {
		err = lockedDo(netns, cmd.Run)
	}
	return out.Bytes(), errOut.Bytes(), cmd.ProcessState, err
}

// lockedDo runs f on a thread switched into n; exec'd children inherit it.
func lockedDo(n ns.NetNS, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return n.Do(func(ns.NetNS) error { return f() })
}

// spawnExec is a libcni Exec that runs every plugin binary through a
// spawner living in the variant's host namespace, for the one thing the
// plain driver cannot measure: each process's peak RSS. Only the untimed
// RSS pass uses it.
type spawnExec struct {
	version.PluginDecoder
	sp *spawner
	acct
}

func (e *spawnExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *spawnExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	r, err := e.sp.run(ctx, path, stdin, env)
	if err != nil {
		return nil, err
	}
	e.record(filepath.Base(path), verbOf(env), r.rssKB, 0)
	if r.code != 0 {
		return nil, pluginErr(r.msg, r.stdout, r.stderr)
	}
	return r.stdout, nil
}

func verbOf(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			return v
		}
	}
	return "?"
}

// pluginErr mirrors invoke.RawExec: a CNI error on stdout wins, then
// stderr, then the exit status.
func pluginErr(exit string, stdout, stderr []byte) error {
	e := types.Error{}
	if len(stdout) > 0 {
		if perr := json.Unmarshal(stdout, &e); perr == nil && (e.Code != 0 || e.Msg != "") {
			return &e
		}
	}
	if len(stderr) > 0 {
		return fmt.Errorf("netplugin failed: %s: %q", exit, strings.TrimSpace(string(stderr)))
	}
	return fmt.Errorf("netplugin failed with no error message: %s (stdout %q)", exit, stdout)
}

// spawner is the client of one spawner process (see spawner/main.go).
type spawner struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	wmu   sync.Mutex

	mu      sync.Mutex
	next    uint32
	pending map[uint32]chan spawnResult
	dead    error
}

type spawnResult struct {
	code           int64 // exit code; -1: killed or not started
	msg            string
	stdout, stderr []byte
	rssKB          int64
}

// buildSpawner builds the spawner program into dir.
func buildSpawner(dir string) (string, error) {
	out := filepath.Join(dir, "spawner")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nswire/nswire/scripts/bench/spawner")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build spawner: %v\n%s", err, b)
	}
	return out, nil
}

// startSpawner starts a spawner inside netns (nil: this process's), stopped
// by t's cleanups; closing its stdin kills whatever it still runs.
func startSpawner(t testutil.T, path string, netns ns.NetNS) *spawner {
	s := &spawner{cmd: exec.Command(path), pending: map[uint32]chan spawnResult{}}
	s.cmd.Stderr = os.Stderr
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatalf("spawner: %v", err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("spawner: %v", err)
	}
	start := func(ns.NetNS) error { return s.cmd.Start() }
	if netns != nil {
		err = netns.Do(start)
	} else {
		err = start(nil)
	}
	if err != nil {
		t.Fatalf("start spawner: %v", err)
	}
	done := make(chan struct{})
	go func() {
		s.read(bufio.NewReader(stdout))
		close(done)
	}()
	t.Cleanup(func() {
		s.stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
		}
		s.cmd.Wait()
	})
	return s
}

func (s *spawner) read(r *bufio.Reader) {
	var err error
	for {
		var id uint32
		var res spawnResult
		if err = binary.Read(r, binary.LittleEndian, &id); err != nil {
			break
		}
		var msg []byte
		err = errors.Join(
			binary.Read(r, binary.LittleEndian, &res.code),
			readFrame(r, &msg), readFrame(r, &res.stdout), readFrame(r, &res.stderr),
			binary.Read(r, binary.LittleEndian, &res.rssKB))
		if err != nil {
			break
		}
		res.msg = string(msg)
		s.mu.Lock()
		ch := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}
	s.mu.Lock()
	s.dead = fmt.Errorf("spawner exited: %v", err)
	for id, ch := range s.pending {
		delete(s.pending, id)
		ch <- spawnResult{code: -1, msg: s.dead.Error()}
	}
	s.mu.Unlock()
}

func readFrame(r io.Reader, p *[]byte) error {
	var n uint32
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return err
	}
	*p = make([]byte, n)
	_, err := io.ReadFull(r, *p)
	return err
}

// run executes path with stdin and env and waits for it; an empty path
// asks for the spawner's own peak RSS (in rssKB).
func (s *spawner) run(ctx context.Context, path string, stdin []byte, env []string) (spawnResult, error) {
	var b bytes.Buffer
	u32 := func(v uint32) { binary.Write(&b, binary.LittleEndian, v) }
	bs := func(p []byte) { u32(uint32(len(p))); b.Write(p) }
	ch := make(chan spawnResult, 1)
	s.mu.Lock()
	if s.dead != nil {
		s.mu.Unlock()
		return spawnResult{}, s.dead
	}
	id := s.next
	s.next++
	s.pending[id] = ch
	s.mu.Unlock()
	u32(id)
	bs([]byte(path))
	bs(stdin)
	u32(uint32(len(env)))
	for _, kv := range env {
		bs([]byte(kv))
	}
	s.wmu.Lock()
	_, err := s.stdin.Write(b.Bytes())
	s.wmu.Unlock()
	if err != nil {
		return spawnResult{}, fmt.Errorf("spawner: %w", err)
	}
	select {
	case r := <-ch:
		if r.code == -1 && r.msg != "" && s.deadErr() != nil {
			return r, s.deadErr()
		}
		return r, nil
	case <-ctx.Done():
		return spawnResult{}, ctx.Err()
	}
}

func (s *spawner) deadErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// floorKB is the spawner's own peak RSS: no child can report less.
func (s *spawner) floorKB() int64 {
	r, err := s.run(context.Background(), "", nil, nil)
	if err != nil {
		return 0
	}
	return r.rssKB
}
