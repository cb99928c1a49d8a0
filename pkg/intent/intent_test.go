package intent

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/nswire/nswire/pkg/firewall"
	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/shaping"
)

func TestSaveLoadRemove(t *testing.T) {
	ip4, sub4, _ := net.ParseCIDR("10.1.0.2/24")
	ip6, sub6, _ := net.ParseCIDR("fd00::2/64")
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	a := &firewall.Attachment{
		Net: firewall.Network{Name: "n1", Bridge: "br1", Subnets: []*net.IPNet{sub4, sub6},
			IPMasq: true, Isolation: true, ICC: true},
		ContainerID: "c1", IfName: "eth0", HostIf: "nswabc",
		IPs: []*net.IPNet{{IP: ip4.To4(), Mask: sub4.Mask}, {IP: ip6, Mask: sub6.Mask}},
		MAC: mac,
		Ports: []firewall.Port{{Proto: "tcp", HostPort: 8080, ContainerPort: 80},
			{Proto: "udp", HostAddr: netip.MustParseAddr("192.0.2.1"), HostPort: 53, ContainerPort: 53}},
	}
	l := shaping.Limits{IngressRate: 1e6, IngressBurst: 1e5}
	dir := Dir(t.TempDir(), "n1")
	if err := Save(dir, Of(a, l)); err != nil {
		t.Fatal(err)
	}
	// A killed Save's temporary file and a foreign file are skipped.
	os.WriteFile(filepath.Join(dir, "tmp.123"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "junk.json"), []byte("not json"), 0o600)
	got, err := Load(dir)
	if err != nil || len(got) != 1 {
		t.Fatalf("Load = %v, %v; want one intent", got, err)
	}
	back, err := got[0].Attachment()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, a) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, a)
	}
	if got[0].Limits() != l {
		t.Errorf("limits %+v, want %+v", got[0].Limits(), l)
	}
	if err := Prune(dir, func(id ident.Attachment) bool { return id.ContainerID == "c1" }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp.123")); !os.IsNotExist(err) {
		t.Error("Prune left the temporary file")
	}
	if got, _ := Load(dir); len(got) != 1 {
		t.Errorf("Prune removed a kept intent")
	}
	id := ident.Attachment{Network: "n1", ContainerID: "c1", IfName: "eth0"}
	if err := Remove(dir, id); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir, id); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if got, _ := Load(dir); len(got) != 0 {
		t.Errorf("intent left after Remove: %v", got)
	}
}

// BenchmarkSaveRemove is what an intent costs ADD (Save) and DEL (Remove)
// in the plugin process, on the dataDir's file system.
func BenchmarkSaveRemove(b *testing.B) {
	dir := Dir(b.TempDir(), "n1")
	in := Intent{Network: "n1", IfName: "eth0", HostIf: "nsw0123456789ab", Subnets: []string{"10.1.0.0/24"},
		IPs: []string{"10.1.0.2/24"}, Ports: []Port{{Proto: "tcp", HostPort: 8080, ContainerPort: 80}}}
	for i := 0; b.Loop(); i++ {
		in.ContainerID = fmt.Sprint("c", i)
		if err := Save(dir, in); err != nil {
			b.Fatal(err)
		}
		if err := Remove(dir, in.ID()); err != nil {
			b.Fatal(err)
		}
	}
}
