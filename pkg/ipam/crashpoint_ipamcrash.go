//go:build ipamcrash

package ipam

import (
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

var crashHits atomic.Int64

// crashPoint SIGKILLs the process at the N-th crash point when
// NSWIRE_IPAM_CRASH_AT=N, so the crash test can hit every step of a write.
func crashPoint(string) {
	at, err := strconv.ParseInt(os.Getenv("NSWIRE_IPAM_CRASH_AT"), 10, 64)
	if err == nil && crashHits.Add(1) == at {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is asynchronous; never run past the crash point
	}
}
