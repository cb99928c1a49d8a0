package link

import (
	"os"
	"testing"

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
// kernel's answer.
func TestStartDeleteUnlistsBeforeReturning(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	h := n.Handle()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sd-host"}, PeerName: "sd-peer"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	var d *Deletion
	n.Run(func() error {
		l, err := netlink.LinkByName("sd-host")
		if err != nil {
			return err
		}
		d = StartDelete(l)
		for _, name := range []string{"sd-host", "sd-peer"} {
			if _, err := netlink.LinkByName(name); err == nil {
				t.Errorf("%s still listed when StartDelete returned", name)
			}
		}
		return nil
	})
	if err := d.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if links := n.Links(); len(links) != 1 || links[0] != "lo" {
		t.Fatalf("namespace holds %v after the delete, want only lo", links)
	}
}

// A refused removal returns without waiting for an announcement that never
// comes, and Wait carries the error.
func TestStartDeleteReportsRefusal(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	var d *Deletion
	n.Run(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		d = StartDelete(lo)
		return nil
	})
	if err := d.Wait(); err == nil {
		t.Fatal("deleting lo succeeded")
	}
	n.Link("lo")
}
