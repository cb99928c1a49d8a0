package firewall

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
)

// fakeAtt is an attachment whose host interface does not exist: the
// firewall keys on names, so the elements are real and countable.
func fakeAtt(n Network, i int, port int) *Attachment {
	ip := net.IPv4(10, 1, byte(i/250), byte(10+i%250)).To4()
	a := &Attachment{Net: n, ContainerID: fmt.Sprintf("fake%04d", i), IfName: "eth0",
		HostIf: fmt.Sprintf("fk%04d", i), IPs: []*net.IPNet{{IP: ip, Mask: net.CIDRMask(16, 32)}},
		MAC: net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}}
	if port > 0 {
		a.Ports = []Port{{Proto: "tcp", HostPort: uint16(port), ContainerPort: 80}}
	}
	return a
}

func TestScale200(t *testing.T) {
	tp := newTopo(t)
	b := tp.addBridge(1, nil)
	var fakes []*Attachment
	start := time.Now()
	for i := 0; i < 200; i++ {
		a := fakeAtt(b.Network, i, 20000+i)
		must(t, tp.fw.Add(a), "Add %d", i)
		fakes = append(fakes, a)
	}
	t.Logf("200 Adds: %v (%v each)", time.Since(start), time.Since(start)/200)
	web := tp.addContainer(b, 2, Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80})
	cli := tp.addContainer(b, 3)
	tp.add(web)
	tp.add(cli)
	serve(t, web.ns, 80)

	counts := func(p4, p6, guards, chains int) {
		t.Helper()
		if n := tp.count(inetTable, "dnat4any"); n != p4 {
			t.Fatalf("dnat4any: %d elements, want %d", n, p4)
		}
		if n := tp.count(inetTable, "dnat6any"); n != p6 {
			t.Fatalf("dnat6any: %d elements, want %d", n, p6)
		}
		if n := tp.count(brTable, setGuarded); n != guards {
			t.Fatalf("guard: %d elements, want %d", n, guards)
		}
		if n := len(tp.chains(nftables.TableFamilyINet, attPrefix)); n != chains {
			t.Fatalf("inet attachment chains: %d, want %d", n, chains)
		}
		if n := len(tp.chains(nftables.TableFamilyBridge, guardPrefix)); n != guards {
			t.Fatalf("bridge guard chains: %d, want %d", n, guards)
		}
	}
	counts(201, 1, 202, 201)
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())
	tp.mustReach(cli.ns, "tcp", hp(hostUp4, 8080), nil, b.gw4.String())

	// A conflict among many is still found and changes nothing.
	bad := fakeAtt(b.Network, 249, 20123)
	wantCode(t, tp.fw.Add(bad), ErrPortConflict, fakes[123].ContainerID)
	counts(201, 1, 202, 201)

	start = time.Now()
	for _, a := range fakes[:100] {
		must(t, tp.fw.Del(&Attachment{Net: Network{Name: a.Net.Name}, ContainerID: a.ContainerID, IfName: a.IfName}), "Del")
	}
	t.Logf("100 identity-only Dels: %v", time.Since(start))
	counts(101, 1, 102, 101)
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())

	valid := []types.GCAttachment{{ContainerID: web.att.ContainerID, IfName: "eth0"}, {ContainerID: cli.att.ContainerID, IfName: "eth0"}}
	for _, a := range fakes[100:150] {
		valid = append(valid, types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	must(t, tp.fw.GC(b.Network, valid), "GC")
	counts(51, 1, 52, 51)
	for _, a := range fakes[100:150] {
		must(t, tp.fw.Check(a), "Check kept %s", a.ContainerID)
	}
	must(t, tp.fw.Check(web.att), "Check web")
	tp.mustReach(tp.up, "tcp", hp(hostUp4, 8080), nil, up4.String())
}

func benchAddDel(b *testing.B, existing int) {
	needRoot(b)
	host := newNS(b)
	fw, err := New(Options{NetNSFd: int(host.Fd())})
	must(b, err, "New")
	b.Cleanup(fw.Close)
	_, s4, _ := net.ParseCIDR("10.1.0.0/16")
	n := Network{Name: "bench", Bridge: "brb", Subnets: []*net.IPNet{s4}, IPMasq: true, Isolation: true, ICC: true}
	for i := 0; i < existing; i++ {
		must(b, fw.Add(fakeAtt(n, i, 20000+i)), "Add %d", i)
	}
	a := fakeAtt(n, existing, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := fw.Add(a); err != nil {
			b.Fatal(err)
		}
		if err := fw.Del(a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAddDel(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) { benchAddDel(b, n) })
	}
}
