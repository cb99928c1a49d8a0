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

// deleteIn runs Delete on link name from a thread inside n: the removal
// acts in the caller's namespace, not the process's.
func deleteIn(n *testutil.NS, name string) error {
	var err error
	n.Run(func() error {
		l, lerr := netlink.LinkByName(name)
		if lerr != nil {
			return lerr
		}
		err = Delete(l)
		return nil
	})
	return err
}

// Both ends go, and nothing else of the namespace.
func TestDeleteRemovesBothEnds(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sd-host"}, PeerName: "sd-peer"}
	if err := n.Handle().LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := deleteIn(n, "sd-host"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if links := n.Links(); len(links) != 1 || links[0] != "lo" {
		t.Fatalf("namespace holds %v after the delete, want only lo", links)
	}
}

// A refused removal is reported, and the link stays.
func TestDeleteReportsRefusal(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	if err := deleteIn(n, "lo"); err == nil {
		t.Fatal("deleting lo succeeded")
	}
	n.Link("lo")
}

// A link already gone is success: DEL converges.
func TestDeleteGoneLink(t *testing.T) {
	needRoot(t)
	n := testutil.NewNS(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sd-host"}, PeerName: "sd-peer"}
	if err := n.Handle().LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	n.Run(func() error {
		l, err := netlink.LinkByName("sd-host")
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
		return Delete(l)
	})
}
