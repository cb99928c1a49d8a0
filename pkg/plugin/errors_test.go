package plugin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/link"
)

// asCNI fails unless err is a *types.Error itself (what skel prints
// without turning it into 999) and returns it.
func asCNI(t *testing.T, err error) *types.Error {
	t.Helper()
	e, ok := err.(*types.Error)
	if !ok {
		t.Fatalf("%T %v is not a *types.Error", err, err)
	}
	return e
}

func TestCNIErrorClasses(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code uint
	}{
		{"EPERM", unix.EPERM, ErrNotPermitted},
		{"EACCES opening the lock", &os.PathError{Op: "open", Path: "/run/nswire/networks.lock", Err: unix.EACCES}, ErrNotPermitted},
		{"EROFS writing /proc/sys", &os.PathError{Op: "open", Path: "/proc/sys/net/ipv4/ip_forward", Err: unix.EROFS}, ErrNotPermitted},
		{"ENOMEM", unix.ENOMEM, types.ErrTryAgainLater},
		{"ENOBUFS", fmt.Errorf("netlink receive: %w", unix.ENOBUFS), types.ErrTryAgainLater},
		{"ENOSPC", unix.ENOSPC, types.ErrTryAgainLater},
		{"ENFILE: a full set", unix.ENFILE, types.ErrTryAgainLater},
		{"EBUSY", unix.EBUSY, types.ErrTryAgainLater},
		{"EAGAIN", unix.EAGAIN, types.ErrTryAgainLater},
		{"dump interrupted", fmt.Errorf("list links: %w", netlink.ErrDumpInterrupted), types.ErrTryAgainLater},
		{"nftables dump interrupted", fmt.Errorf("firewall: gc: %w", firewall.ErrDumpInterrupted), types.ErrTryAgainLater},
		{"no reply in time", fmt.Errorf("netlink receive: %w", os.ErrDeadlineExceeded), types.ErrTryAgainLater},
		{"EEXIST", fmt.Errorf("firewall: add n/c/eth0: %w", unix.EEXIST), types.ErrInvalidNetworkConfig},
		{"ENOENT", fmt.Errorf("firewall: record networks: %w", unix.ENOENT), types.ErrTryAgainLater},
		{"ENODEV", unix.ENODEV, types.ErrTryAgainLater},
		{"link not found", fmt.Errorf("look up new veth: %w", netlink.LinkNotFoundError{}), types.ErrTryAgainLater},
		{"EOPNOTSUPP", unix.EOPNOTSUPP, ErrKernelFeature},
		{"EAFNOSUPPORT", unix.EAFNOSUPPORT, ErrKernelFeature},
		// The markers beat the errno they explain: a module missing, not
		// an object gone.
		{"firewall feature", fmt.Errorf("%w (%w)", firewall.ErrKernelFeature, unix.ENOENT), ErrKernelFeature},
		{"tc feature", link.FeatureError("shaping: tbf qdisc on nsw0", "sch_tbf", unix.ENOENT), ErrKernelFeature},
		// A wrapped or joined CNI error keeps its code over any errno.
		{"wrapped CNI error", fmt.Errorf("release network %q: %w", "a", types.NewError(types.ErrIOFailure, "m", "")), types.ErrIOFailure},
		{"joined CNI error", errors.Join(unix.EPERM, types.NewError(types.ErrUnknownContainer, "m", "")), types.ErrUnknownContainer},
		// First class in the table wins for unrelated errnos.
		{"joined errnos", errors.Join(unix.ENOENT, unix.EPERM), ErrNotPermitted},
		{"EINVAL is not foreseeable", unix.EINVAL, types.ErrInternal},
		{"no errno", errors.New("netlink receive: malformed message"), types.ErrInternal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := asCNI(t, cniError("ADD", tc.err))
			if e.Code != tc.code {
				t.Errorf("code %d, want %d (%v)", e.Code, tc.code, e)
			}
			if !strings.Contains(e.Error(), tc.err.Error()[:min(len(tc.err.Error()), 20)]) {
				t.Errorf("%q lost the original message %q", e.Error(), tc.err)
			}
		})
	}
}

// A classified kernel error says in msg what to do and keeps in details
// what failed.
func TestCNIErrorMessage(t *testing.T) {
	orig := fmt.Errorf("network lock: open /run/nswire/networks.lock: %w", unix.EACCES)
	e := asCNI(t, cniError("ADD", orig))
	if !strings.HasPrefix(e.Msg, "ADD: not permitted") || !strings.Contains(e.Msg, "CAP_NET_ADMIN") {
		t.Errorf("msg %q should name the verb and what to do", e.Msg)
	}
	if e.Details != orig.Error() {
		t.Errorf("details %q, want the original %q", e.Details, orig)
	}
	// Joined failures (DEL, GC) print on one line.
	e = asCNI(t, cniError("DEL", errors.Join(errors.New("a: "+unix.EPERM.Error()), unix.EPERM)))
	if strings.Contains(e.Error(), "\n") {
		t.Errorf("%q spans lines", e.Error())
	}
}

func TestCNIErrorKeepsCNIErrors(t *testing.T) {
	if cniError("DEL", nil) != nil {
		t.Fatal("nil became an error")
	}
	orig := types.NewError(types.ErrInvalidNetworkConfig, "bridge: ...", "d")
	if got := cniError("ADD", orig); got != orig {
		t.Errorf("got %v, want the same *types.Error", got)
	}
	e := asCNI(t, cniError("ADD", fmt.Errorf("release network %q: %w", "old", orig)))
	if e.Code != orig.Code || !strings.Contains(e.Msg, `release network "old"`) || !strings.Contains(e.Msg, "bridge: ...") {
		t.Errorf("got %v, want code %d with the context and the inner message", e, orig.Code)
	}
}

func TestIsMismatch(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&link.Mismatch{Msg: "host interface is down"}, true},
		{fmt.Errorf("ctx: %w", &firewall.Mismatch{Msg: "element missing"}), true},
		{fmt.Errorf("firewall: check n/c/eth0: %w", unix.EPERM), false},
		{fmt.Errorf("container interface %q: %w", "eth0", unix.EBADF), false},
	} {
		if got := isMismatch(tc.err); got != tc.want {
			t.Errorf("isMismatch(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestDelegateErr(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(path string) error {
		var out, errb strings.Builder
		cmd := exec.Command(path)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return delegateErr(path, err, []byte(out.String()), []byte(errb.String()))
		}
		return nil
	}
	notExec := filepath.Join(dir, "garbage")
	if err := os.WriteFile(notExec, []byte{0x7f, 'E', 'L', 'F', 0, 0}, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		path string
		code uint // 0: not a CNI error
	}{
		{"prints a CNI error", script("cni", `echo '{"code":11,"msg":"range exhausted"}'; exit 1`), 11},
		{"cannot start", notExec, types.ErrInvalidEnvironmentVariables},
		{"killed", script("killed", "kill -9 $$"), types.ErrTryAgainLater},
		{"fails without a CNI error", script("crash", "echo panic >&2; exit 2"), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.path)
			var e *types.Error
			switch {
			case tc.code == 0 && errors.As(err, &e):
				t.Errorf("got CNI error %v, want a plain error for the verb boundary", e)
			case tc.code == 0:
				if !strings.Contains(err.Error(), "panic") {
					t.Errorf("%v lost the plugin's output", err)
				}
			case !errors.As(err, &e) || e.Code != tc.code:
				t.Errorf("got %v, want code %d", err, tc.code)
			}
		})
	}
}

// finish returns the error the verb must return, and logs its code.
func TestFinishClassifies(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "log")
	tr := newTrace("DEL", &skel.CmdArgs{ContainerID: "c", IfName: "eth0"})
	n := &config.Net{LogFile: logFile}
	n.Name = "n"
	tr.configure(n)
	err := tr.finish(fmt.Errorf("delete chain: %w", unix.EPERM), nil)
	if e := asCNI(t, err); e.Code != ErrNotPermitted {
		t.Errorf("code %d, want %d", e.Code, ErrNotPermitted)
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), `"code":102`) {
		t.Errorf("log %s lacks the code", b)
	}
	if tr.finish(nil, nil) != nil {
		t.Error("success became an error")
	}
}
