// Package startup fits the Go runtime to a process that lives for one CNI
// verb. Blank-import it from a main package.
//
// It imports nothing but syscall and runtime, so its init runs among the
// first, before the program's own allocations.
package startup

import (
	"syscall"
	"unsafe"
)

const (
	madvPopulateWrite = 23      // MADV_POPULATE_WRITE
	span              = 2 << 20 // more than a verb's heap grows by
	align             = 64 << 10
	// chunk is how much the Go runtime maps at a time when the heap grows
	// (pallocChunkBytes, 4 MiB since Go 1.26 randomises the heap base).
	// Past the chunk holding the anchor the arena is still PROT_NONE, and
	// the advice would fail there.
	chunk = 4 << 20
)

// anchor is a heap object: its address says where the heap is growing.
var anchor *[64]byte

// init maps the next pages of the heap with one system call.
//
// On a virtual machine the first touch of each anonymous page can trap to
// the hypervisor (about 15 µs each measured on the development VM), and an
// ADD touches a few hundred heap pages one at a time after start-up. One
// MADV_POPULATE_WRITE over the 2 MiB the heap grows into next costs a
// fraction of that. Linux before 5.14 refuses the advice; nothing changes
// then.
func init() {
	anchor = new([64]byte)
	base, size := populateRange(uintptr(unsafe.Pointer(anchor)))
	// An error (Linux before 5.14) only means the pages fault in one by
	// one as before.
	_, _, populateErr = syscall.Syscall(syscall.SYS_MADVISE, base, size, madvPopulateWrite)
}

// populateErr is the advice's outcome, for the test.
var populateErr syscall.Errno

// populateRange is span bytes from the anchor's page block on, cut at the
// end of the mapped heap chunk that holds it.
func populateRange(anchor uintptr) (base, size uintptr) {
	base = anchor &^ (align - 1)
	end := min(base+span, (anchor|(chunk-1))+1)
	return base, end - base
}
