package link

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces and links")
	}
}

// The link must be gone from the caller's namespace (not the process's)
// when StartDelete returns, both ends with it, and Wait must report the
// kernel's answer; with a sender process and without.
func TestStartDeleteUnlistsBeforeReturning(t *testing.T) {
	for _, sender := range []bool{true, false} {
		t.Run(fmt.Sprintf("sender=%v", sender), func(t *testing.T) {
			withSender(t, sender)
			testUnlistsBeforeReturning(t)
		})
	}
}

// startDeleteIn starts the removal of link name from a thread inside n,
// and runs inside (if any) there once StartDelete returned.
func startDeleteIn(n *testutil.NS, name string, inside func(*Deletion)) *Deletion {
	var d *Deletion
	n.Run(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		d = StartDelete(l)
		if inside != nil {
			inside(d)
		}
		return nil
	})
	return d
}

// withSender sets useSender for one test.
func withSender(t *testing.T, on bool) {
	old := useSender
	useSender = on
	t.Cleanup(func() { useSender = old })
}

func testUnlistsBeforeReturning(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	h := n.Handle()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sd-host"}, PeerName: "sd-peer"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	d := startDeleteIn(n, "sd-host", func(d *Deletion) {
		for _, name := range []string{"sd-host", "sd-peer"} {
			if _, err := netlink.LinkByName(name); err == nil {
				t.Errorf("%s still listed when StartDelete returned", name)
			}
		}
		if useSender {
			checkSenderStdio(t, d)
		} else if d.sender != 0 {
			t.Error("a sender process ran with useSender off")
		}
	})
	if err := d.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	select {
	case <-d.done:
		if d.result != nil {
			t.Errorf("the kernel answered %v", d.result)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delete request never ended")
	}
	if links := n.Links(); len(links) != 1 || links[0] != "lo" {
		t.Fatalf("namespace holds %v after the delete, want only lo", links)
	}
}

// A refused removal returns without waiting for an announcement that never
// comes, and Wait carries the error; with a sender process and without.
func TestStartDeleteReportsRefusal(t *testing.T) {
	for _, sender := range []bool{true, false} {
		t.Run(fmt.Sprintf("sender=%v", sender), func(t *testing.T) {
			withSender(t, sender)
			testReportsRefusal(t)
		})
	}
}

func testReportsRefusal(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	d := startDeleteIn(n, "lo", nil)
	if err := d.Wait(); err == nil {
		t.Fatal("deleting lo succeeded")
	}
	n.Link("lo")
}

// On amd64 the request goes through a sender process, which must not hold
// the plugin's stdin, stdout or stderr: the runtime reads the plugin's
// output until every holder closed it. The sender is usually still in the
// kernel's grace period here; if it already exited there is nothing to
// look at.
func checkSenderStdio(t *testing.T, d *Deletion) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		return
	}
	if d.sender == 0 {
		t.Fatal("no sender process on amd64")
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.sender))
	if err != nil {
		t.Logf("sender already gone: %v", err)
		return
	}
	for _, fd := range fds {
		if n, _ := strconv.Atoi(fd.Name()); n <= 2 {
			t.Errorf("sender holds fd %d", n)
		}
	}
}
