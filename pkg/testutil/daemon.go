package testutil

import (
	"os"
	"syscall"
)

// Daemon is a long-running program a test starts inside a network
// namespace (a node agent), in its own process group, logging to a file.
type Daemon struct {
	*proc
	t T
}

// StartDaemon runs bin with args inside the namespace at netns (through
// nsenter) and stops it when the test ends; its log is dir/name.log.
func StartDaemon(t T, netns, dir, name, bin string, args ...string) *Daemon {
	t.Helper()
	requireRoot(t)
	p, err := startProc(dir, name, "nsenter", append([]string{"--net=" + netns, "--", bin}, args...)...)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(p.stop)
	return &Daemon{proc: p, t: t}
}

// Stop ends the daemon with SIGTERM (SIGKILL after a grace period).
func (d *Daemon) Stop() { d.stop() }

// Kill ends the daemon with SIGKILL, as a crash or an OOM kill would.
func (d *Daemon) Kill() {
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
}

// Exited reports whether the daemon has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Pid is the daemon's process ID (nsenter execs it in place).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// LogTail is the end of the daemon's log.
func (d *Daemon) LogTail() string {
	b, _ := os.ReadFile(d.log)
	return tail(b, 40)
}
