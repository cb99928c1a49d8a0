package startup

import (
	"runtime"
	"syscall"
)

// init runs the program on one P (one thread running Go code at a time)
// unless GOMAXPROCS is set in the environment.
//
// A verb is a chain of short system calls on one goroutine, with a few
// helper goroutines that mostly wait. With a second P every wake-up of a
// goroutine also wakes an idle thread, which spins, finds nothing and
// sleeps again: futex and nanosleep calls and context switches, each a
// trap on a virtual machine, and CPU taken from the other plugin processes
// a busy node runs at the same time. A goroutine blocked in a system call
// still lets another run: the runtime hands its P to another thread.
//
// Measured on the 2-core development VM through libcni, 8 parallel
// callers: +9% ADD/s and −14% ADD p99 (three alternated rounds); one
// caller at a time: no change. Setting GOMAXPROCS=1 in the environment
// does better still (+17% ADD/s, −2 ms per ADD alone), since then the
// runtime never starts the threads its own start-up wakes, but a plugin
// does not choose its environment.
func init() {
	if _, set := syscall.Getenv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
}
