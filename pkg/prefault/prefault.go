// Package prefault maps the next pages of the Go heap with one system call
// when the process starts. Blank-import it from a main package.
//
// nswire runs as one short process per CNI verb. On a virtual machine the
// first touch of each anonymous page can trap to the hypervisor (about
// 15 µs each measured on the development VM), and an ADD touches a few
// hundred heap pages one at a time after start-up: about 4 ms of its CPU.
// One MADV_POPULATE_WRITE over the 2 MiB the heap grows into next costs a
// fraction of that. Linux before 5.14 refuses the advice; nothing changes
// then.
//
// The package imports nothing but syscall, so its init runs among the
// first, before the program's own allocations.
package prefault

import (
	"syscall"
	"unsafe"
)

const (
	madvPopulateWrite = 23      // MADV_POPULATE_WRITE
	span              = 2 << 20 // more than a verb's heap grows by
	align             = 64 << 10
)

// anchor is a heap object: its address says where the heap is growing.
var anchor *[64]byte

func init() {
	anchor = new([64]byte)
	base := uintptr(unsafe.Pointer(anchor)) &^ (align - 1)
	// The heap arena is mapped far beyond span; an error (old kernel)
	// only means the pages fault in one by one as before.
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, base, span, madvPopulateWrite)
}
