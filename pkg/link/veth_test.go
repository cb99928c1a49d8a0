package link

import (
	"testing"

	"github.com/nswire/nswire/pkg/testutil"
)

// Both ends get one queue each way at creation, so the kernel has no
// queue count to cut (and no grace period to wait for) afterwards.
func TestCreateVethOneQueue(t *testing.T) {
	needRoot(t)
	host, cont := testutil.NewNS(t), testutil.NewNS(t)
	host.Run(func() error {
		_, err := CreateVeth(VethSpec{HostName: "cv-host", Alias: "nswire/t/c/eth0", PeerName: "eth0", PeerNetNSFd: int(cont.Fd()), MTU: 1400})
		return err
	})
	for _, l := range []struct {
		ns   *testutil.NS
		name string
	}{{host, "cv-host"}, {cont, "eth0"}} {
		a := l.ns.Link(l.name).Attrs()
		if a.NumTxQueues != 1 || a.NumRxQueues != 1 || a.MTU != 1400 {
			t.Errorf("%s: %d tx / %d rx queues, MTU %d; want 1 / 1, 1400", l.name, a.NumTxQueues, a.NumRxQueues, a.MTU)
		}
	}
	if a := host.Link("cv-host").Attrs(); a.Alias != "nswire/t/c/eth0" || a.Group != OwnerGroup {
		t.Errorf("host end alias %q group %#x", a.Alias, a.Group)
	}
}
