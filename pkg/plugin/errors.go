package plugin

import (
	"errors"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/link"
)

// nswire's own CNI error codes (100 and up are plugin-specific).
const (
	// ErrCheckFailed: CHECK found the attachment differs from what ADD
	// made. Only a difference gets it, never a failure to look.
	ErrCheckFailed uint = 100
	// ErrKernelFeature: the kernel lacks a module or feature nswire uses.
	ErrKernelFeature uint = 101
	// ErrNotPermitted: the kernel or the file system refused nswire.
	ErrNotPermitted uint = 102
)

// A class is what a kernel error means to whoever must act on it: a code
// and what to do.
type class struct {
	code   uint
	advice string
}

var (
	lacksFeature = class{ErrKernelFeature, "the kernel lacks a feature nswire uses: load the modules the details name, or use a kernel built with them"}
	notPermitted = class{ErrNotPermitted, "not permitted: nswire must run as root (CAP_NET_ADMIN and CAP_SYS_ADMIN) with /proc/sys and /run writable; the details name what was refused"}
	shortOf      = class{types.ErrTryAgainLater, "the kernel is short of memory or table space, or an object is busy (in use by another process, or referenced by a rule made by hand): retry later"}
	unsettled    = class{types.ErrTryAgainLater, "the kernel's state kept changing while nswire read it, or it did not answer in time: retry"}
	inTheWay     = class{types.ErrInvalidNetworkConfig, "an object in the kernel is in the way (left over by an earlier attachment or network, or made by hand): remove the object the details name, or give this network another bridge and subnets"}
	vanished     = class{types.ErrTryAgainLater, "an object vanished while nswire used it (a namespace or interface deleted meanwhile): retry; if it repeats, it was removed by hand: for nswire's nftables tables, `nft delete table inet nswire; nft delete table bridge nswire` lets the next ADD rebuild them"}
)

// classes maps kernel answers to classes, first match wins. Markers set
// where the error was made come first: they know more than the errno. An
// errno found nowhere here is not foreseeable and stays code 999.
var classes = []struct {
	errs []error
	class
}{
	{[]error{link.ErrKernelFeature, firewall.ErrKernelFeature, unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.EPROTONOSUPPORT}, lacksFeature},
	{[]error{unix.EPERM, unix.EACCES, unix.EROFS}, notPermitted},
	{[]error{unix.ENOMEM, unix.ENOBUFS, unix.ENOSPC, unix.ENFILE, unix.EMFILE, unix.EXFULL, unix.EBUSY, unix.EAGAIN}, shortOf},
	{[]error{netlink.ErrDumpInterrupted, firewall.ErrDumpInterrupted, os.ErrDeadlineExceeded, unix.ETIMEDOUT}, unsettled},
	{[]error{unix.EEXIST}, inTheWay},
	{[]error{unix.ENOENT, unix.ENODEV, unix.ENXIO, unix.ESRCH, netlink.LinkNotFoundError{}}, vanished},
}

// classify finds err's class; ok is false for an unforeseeable error.
func classify(err error) (c class, ok bool) {
	for _, cl := range classes {
		for _, target := range cl.errs {
			if matches(err, target) {
				return cl.class, true
			}
		}
	}
	return class{}, false
}

// matches is errors.Is, and errors.As for netlink's not-found, a struct
// with an unexported message that errors.Is cannot compare.
func matches(err, target error) bool {
	if _, ok := target.(netlink.LinkNotFoundError); ok {
		return errors.As(err, new(netlink.LinkNotFoundError))
	}
	return errors.Is(err, target)
}

// cniError is the error a verb ends with, as skel must print it: never a
// plain error, which skel would turn into code 999. A *types.Error is
// kept; one wrapped in context (or joined with DEL's and GC's other
// failures) keeps its code and gains the context. A kernel error gets the
// code of its class, msg says what to do and details what failed.
func cniError(verb string, err error) error {
	if err == nil {
		return nil
	}
	if te, ok := err.(*types.Error); ok {
		return te
	}
	// errors.Join separates with newlines; the runtime logs one line.
	text := strings.ReplaceAll(err.Error(), "\n", "; ")
	var te *types.Error
	if errors.As(err, &te) {
		return types.NewError(te.Code, text, "")
	}
	c, ok := classify(err)
	if !ok {
		return types.NewError(types.ErrInternal, verb+": "+text, "")
	}
	return types.NewError(c.code, verb+": "+c.advice, text)
}

// isMismatch reports whether a CHECK error is a difference it found, not a
// failure to look.
func isMismatch(err error) bool {
	return errors.As(err, new(*link.Mismatch)) || errors.As(err, new(*firewall.Mismatch))
}
