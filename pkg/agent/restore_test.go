package agent

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nswire/nswire/pkg/restore"
)

// counter reads one of the agent's counters.
func counter(t *testing.T, a *Agent, name string) float64 {
	t.Helper()
	families, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// syncBuffer is a log sink the watcher's goroutines and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// nftIn runs nft in the namespace at path, as another process (the
// watcher ignores this process's own transactions).
func nftIn(t *testing.T, path string, args ...string) {
	t.Helper()
	if out, err := exec.Command("nsenter", append([]string{"--net=" + path, "--", "nft"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAgentRestoreWatcher: with Config.Restore the agent runs the restore
// watcher on its conf dir in the configured namespace: a pass at start,
// one more when someone else deletes a table named nswire there. The
// passes are counted; the clean ones (debug level) are not printed.
func TestAgentRestoreWatcher(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft")
	}
	n := lanNS(t)
	client, _ := fakeClient(node("self", 1, []string{"10.244.0.0/24"}, "192.0.2.10"))
	var logs syncBuffer
	dir := t.TempDir()
	a, stop := startAgent(t, Config{Client: client, NodeName: "self", ConfDir: dir, Netlink: n.Handle(),
		ClusterCIDRs: prefixes("10.244.0.0/16"), Resync: 50 * time.Millisecond,
		Logger:  slog.New(slog.NewJSONHandler(&logs, nil)),
		Restore: &restore.Options{NetNSFd: int(n.Fd())}})
	eventually(t, "ready", a.Ready)
	eventually(t, "the watcher's first pass", func() bool { return counter(t, a, "nswire_agent_restore_passes_total") >= 1 })

	before := counter(t, a, "nswire_agent_restore_passes_total")
	nftIn(t, n.Path(), "add", "table", "inet", "nswire")
	nftIn(t, n.Path(), "delete", "table", "inet", "nswire")
	eventually(t, "a pass after the table was deleted", func() bool {
		return counter(t, a, "nswire_agent_restore_passes_total") > before
	})
	// No pod runs: nothing to repair, nothing recreated.
	out, err := exec.Command("nsenter", "--net="+n.Path(), "--", "nft", "list", "tables").CombinedOutput()
	if err != nil || strings.Contains(string(out), "nswire") {
		t.Errorf("nft list tables after a pass without pods (%v):\n%s", err, out)
	}
	if r, e := counter(t, a, "nswire_agent_restore_repairs_total"), counter(t, a, "nswire_agent_restore_errors_total"); r != 0 || e != 0 {
		t.Errorf("repairs %v errors %v, want none\n%s", r, e, logs.String())
	}
	stop()
	if strings.Contains(logs.String(), "nothing to restore") {
		t.Errorf("a clean pass was printed at the agent's info level:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"restore":true`) {
		t.Errorf("the start log does not say the watcher is on:\n%s", logs.String())
	}
}

// TestAgentRestoreFailureAlone: a watcher whose passes fail, and one that
// cannot even listen, are logged and counted; the agent syncs, becomes
// ready and stays healthy all the same.
func TestAgentRestoreFailureAlone(t *testing.T) {
	n := lanNS(t)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notANetNS, err := os.Open(notADir)
	if err != nil {
		t.Fatal(err)
	}
	defer notANetNS.Close()
	for name, o := range map[string]restore.Options{
		"passes fail":   {ConfDir: notADir, NetNSFd: int(n.Fd())},
		"cannot listen": {NetNSFd: int(notANetNS.Fd())},
	} {
		t.Run(name, func(t *testing.T) {
			var logs syncBuffer
			client, _ := fakeClient(node("self", 1, []string{"10.244.0.0/24"}, "192.0.2.10"))
			a, _ := startAgent(t, Config{Client: client, NodeName: "self", ConfDir: t.TempDir(), Netlink: n.Handle(),
				ClusterCIDRs: prefixes("10.244.0.0/16"), Resync: 50 * time.Millisecond,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Restore: &o})
			eventually(t, "ready", a.Ready)
			eventually(t, "an error counted", func() bool { return counter(t, a, "nswire_agent_restore_errors_total") >= 1 })
			start := syncCount(t, a)
			eventually(t, "more syncs", func() bool { return syncCount(t, a) >= start+3 })
			if !a.Healthy() || !a.Ready() {
				t.Errorf("healthy %v ready %v", a.Healthy(), a.Ready())
			}
			want := map[string]string{"passes fail": "restore pass failed", "cannot listen": "restore watcher stopped; restarting it"}[name]
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logs.String())
			}
		})
	}
}
