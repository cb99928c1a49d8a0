// Package testutil gives tests throwaway network namespaces, a libcni
// driver that runs plugin binaries inside a private "host" namespace, and
// checks on what the kernel holds. Everything is removed in t.Cleanup.
package testutil

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a throwaway network namespace.
type NS struct {
	ns.NetNS
	t      T
	handle *netlink.Handle
}

// NewNS creates a namespace with lo up, removed when the test ends.
func NewNS(t T) *NS {
	t.Helper()
	requireRoot(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	h, err := netlink.NewHandleAt(vns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(func() {
		h.Close()
		n.Close()
		if err := removeNS(n.Path()); err != nil {
			t.Errorf("remove netns %s: %v", n.Path(), err)
		}
	})
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1}}); err != nil {
		t.Fatalf("lo up: %v", err)
	}
	return &NS{NetNS: n, t: t, handle: h}
}

// Handle is a netlink handle acting in the namespace.
func (n *NS) Handle() *netlink.Handle { return n.handle }

// Run runs f inside the namespace and fails the test on error.
func (n *NS) Run(f func() error) {
	n.t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		n.t.Fatalf("in %s: %v", n.Path(), err)
	}
}

// Sysctl writes /proc/sys/<key> inside the namespace.
func (n *NS) Sysctl(key, value string) {
	n.t.Helper()
	n.Run(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
}

// Link returns the named link in the namespace, failing the test if absent.
func (n *NS) Link(name string) netlink.Link {
	n.t.Helper()
	l, err := n.handle.LinkByName(name)
	if err != nil {
		n.t.Fatalf("link %q in %s: %v", name, n.Path(), err)
	}
	return l
}

// Links lists every link name in the namespace.
func (n *NS) Links() []string {
	n.t.Helper()
	links, err := n.handle.LinkList()
	if err != nil {
		n.t.Fatalf("list links: %v", err)
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// removeNS lazily unmounts the namespace's bind mount: a plain unmount
// fails with EBUSY while a child forked by a parallel test still holds an
// inherited descriptor of it between fork and exec.
func removeNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		return err
	}
	return os.Remove(path)
}

var seq atomic.Int64

// Name returns a name unique to this process and call, at most 15
// characters, safe for links: prefix is cut to fit.
func Name(prefix string) string {
	s := fmt.Sprintf("%x%x", os.Getpid()&0xfff, seq.Add(1))
	if len(prefix)+len(s) > 15 {
		prefix = prefix[:15-len(s)]
	}
	return strings.ReplaceAll(prefix+s, "/", "")
}

// lockedDo runs f on a thread switched into n; exec'd children inherit it.
func lockedDo(n ns.NetNS, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return n.Do(func(ns.NetNS) error { return f() })
}
