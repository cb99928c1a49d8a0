//go:build !amd64

package link

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// cloneSend has no implementation here: deletions complete in-process.
func cloneSend(stack uintptr, fd, notify int32, msg unsafe.Pointer, msgLen uintptr, res *int64) (pid int64, errno int64) {
	return -1, int64(unix.ENOSYS)
}
