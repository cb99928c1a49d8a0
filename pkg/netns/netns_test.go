package netns

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nswire/nswire/pkg/testutil"
)

// TestDoSwitchesAndReturns: f runs in the namespace, and afterwards no
// thread of the process is left in it, however many calls ran.
func TestDoSwitchesAndReturns(t *testing.T) {
	target := testutil.NewNS(t)
	n, err := Open(target.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	want := nsOf(t, target.Path())
	host := nsOf(t, "/proc/self/ns/net")
	for range 5 {
		var inside uint64
		if err := n.Do(func() error {
			inside = nsOf(t, "/proc/thread-self/ns/net")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if inside != want || inside == host {
			t.Fatalf("f ran in netns %d, want %d (host %d)", inside, want, host)
		}
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if got := nsOf(t, task); got == want {
			t.Errorf("%s left in the container namespace", task)
		}
	}
}

// TestDoEnterFails: a namespace that cannot be entered yields an error and
// f does not run.
func TestDoEnterFails(t *testing.T) {
	target := testutil.NewNS(t)
	n, err := Open(target.Path())
	if err != nil {
		t.Fatal(err)
	}
	n.Close() // its fd is gone: setns fails
	ran := false
	if err := n.Do(func() error { ran = true; return nil }); err == nil || ran {
		t.Fatalf("Do on a closed namespace = %v, ran %v", err, ran)
	}
}

// nsOf is the inode of the namespace a file or /proc link stands for.
func nsOf(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
