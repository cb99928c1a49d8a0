#include "textflag.h"

#define SYS_write 1
#define SYS_close 3
#define SYS_rt_sigprocmask 14
#define SYS_sendto 44
#define SYS_clone 56
#define SYS_exit 60
#define SIG_SETMASK 2
#define CLONE_VM 0x100

// func cloneSend(stack uintptr, fd, notify int32, msg unsafe.Pointer, msgLen uintptr, res *int64) (pid int64, errno int64)
//
// The child shares our memory (CLONE_VM, no copy of the page tables) but
// is a process of its own, with a copy of our descriptor table. It runs
// on registers only and never returns into Go: it closes stdin, stdout and
// stderr, sends msg on fd (the kernel may hold it there for a while),
// stores sendto's result at res, writes one byte to notify and exits.
// Every signal is blocked around the clone so that none can run a Go
// handler on the child.
TEXT ·cloneSend(SB),NOSPLIT,$16-56
	MOVQ	$-1, 0(SP)		// block all
	MOVQ	$SIG_SETMASK, DI
	LEAQ	0(SP), SI
	LEAQ	8(SP), DX		// old mask
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigprocmask, AX
	SYSCALL

	MOVLQSX	fd+8(FP), R12
	MOVLQSX	notify+12(FP), R13
	MOVQ	msg+16(FP), R14
	MOVQ	msgLen+24(FP), R15
	MOVQ	res+32(FP), BX
	MOVQ	$CLONE_VM, DI		// exit signal 0: nobody is told
	MOVQ	stack+0(FP), SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	MOVQ	$SYS_clone, AX
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	MOVQ	AX, R12			// clone's result

	MOVQ	$SIG_SETMASK, DI
	LEAQ	8(SP), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigprocmask, AX
	SYSCALL

	CMPQ	R12, $0xfffffffffffff001
	JLS	ok
	NEGQ	R12
	MOVQ	$-1, pid+40(FP)
	MOVQ	R12, errno+48(FP)
	RET
ok:
	MOVQ	R12, pid+40(FP)
	MOVQ	$0, errno+48(FP)
	RET

child:
	MOVQ	$0, DI
	MOVQ	$SYS_close, AX
	SYSCALL
	MOVQ	$1, DI
	MOVQ	$SYS_close, AX
	SYSCALL
	MOVQ	$2, DI
	MOVQ	$SYS_close, AX
	SYSCALL
	MOVQ	R12, DI
	MOVQ	R14, SI
	MOVQ	R15, DX
	XORQ	R10, R10
	XORQ	R8, R8
	XORQ	R9, R9
	MOVQ	$SYS_sendto, AX
	SYSCALL
	MOVQ	AX, 0(BX)
	MOVQ	R13, DI
	MOVQ	BX, SI
	MOVQ	$1, DX
	MOVQ	$SYS_write, AX
	SYSCALL
	XORQ	DI, DI
	MOVQ	$SYS_exit, AX
	SYSCALL
	INT	$3
