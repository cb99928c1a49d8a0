package link

import "unsafe"

// cloneSend is in sender_amd64.s. Its pointers must point into the heap
// and stay referenced until the child wrote to notify: it reads them
// after this returns.
func cloneSend(stack uintptr, fd, notify int32, msg unsafe.Pointer, msgLen uintptr, res *int64) (pid int64, errno int64)
