package ipam

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// The same contract runs against every Store.
var storeKinds = map[string]func(t *testing.T) Store{
	"mem": func(t *testing.T) Store { return NewMemStore() },
	"disk": func(t *testing.T) Store {
		s, err := OpenDiskStore(t.TempDir(), "net")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
}

func TestStoreConformance(t *testing.T) {
	tests := map[string]func(t *testing.T, s Store){
		"reserve held taken":   testReserveHeld,
		"reserve conflict":     testReserveConflict,
		"reserve replaces set": testReserveReplaces,
		"release idempotent":   testReleaseIdempotent,
		"cursor":               testCursor,
		"gc":                   testGC,
	}
	for kind, open := range storeKinds {
		for name, fn := range tests {
			t.Run(kind+"/"+name, func(t *testing.T) {
				s := open(t)
				if err := s.Lock(); err != nil {
					t.Fatal(err)
				}
				defer s.Unlock()
				fn(t, s)
			})
		}
	}
}

func mustReserve(t *testing.T, s Store, a Attachment, ips ...string) {
	t.Helper()
	var list []netip.Addr
	for _, ip := range ips {
		list = append(list, addr(ip))
	}
	if err := s.Reserve(a, list); err != nil {
		t.Fatalf("Reserve(%v, %v): %v", a, ips, err)
	}
}

func heldStr(t *testing.T, s Store, a Attachment) string {
	t.Helper()
	held, err := s.Held(a)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(held, netip.Addr.Compare)
	return joinAddrs(held)
}

func testReserveHeld(t *testing.T, s Store) {
	mustReserve(t, s, att(1), "10.0.0.2", "fd00::2")
	if got := heldStr(t, s, att(1)); got != "10.0.0.2 fd00::2" {
		t.Fatalf("Held = %q", got)
	}
	if got := heldStr(t, s, att(2)); got != "" {
		t.Fatalf("Held(other) = %q", got)
	}
	if taken, _ := s.Taken(addr("10.0.0.2")); !taken {
		t.Fatal("reserved address not taken")
	}
	if taken, _ := s.Taken(addr("10.0.0.3")); taken {
		t.Fatal("free address taken")
	}
	// Same interface name, other container; same container, other interface.
	mustReserve(t, s, Attachment{ContainerID: "c0001", IfName: "eth1"}, "10.0.0.3")
	if got := heldStr(t, s, att(1)); got != "10.0.0.2 fd00::2" {
		t.Fatalf("Held after eth1 = %q", got)
	}
}

func testReserveConflict(t *testing.T, s Store) {
	mustReserve(t, s, att(1), "10.0.0.2")
	err := s.Reserve(att(2), []netip.Addr{addr("10.0.0.3"), addr("10.0.0.2")})
	if errCode(err) != types.ErrTryAgainLater {
		t.Fatalf("err = %v, want code 11", err)
	}
	if got := heldStr(t, s, att(2)); got != "" {
		t.Fatalf("failed Reserve left %q", got)
	}
	if taken, _ := s.Taken(addr("10.0.0.3")); taken {
		t.Fatal("failed Reserve left 10.0.0.3 taken")
	}
}

func testReserveReplaces(t *testing.T, s Store) {
	mustReserve(t, s, att(1), "10.0.0.2", "fd00::2")
	mustReserve(t, s, att(1), "10.0.0.2", "fd00::3")
	if got := heldStr(t, s, att(1)); got != "10.0.0.2 fd00::3" {
		t.Fatalf("Held = %q", got)
	}
	if taken, _ := s.Taken(addr("fd00::2")); taken {
		t.Fatal("dropped address still taken")
	}
}

func testReleaseIdempotent(t *testing.T, s Store) {
	mustReserve(t, s, att(1), "10.0.0.2")
	for range 2 {
		if err := s.Release(att(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Release(att(9)); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.List(); len(res) != 0 {
		t.Fatalf("left %v", res)
	}
}

func testCursor(t *testing.T, s Store) {
	if _, ok := s.LastReserved(0); ok {
		t.Fatal("cursor on empty store")
	}
	_ = s.SetLastReserved(0, addr("10.0.0.9"))
	_ = s.SetLastReserved(1, addr("fd00::9"))
	if ip, ok := s.LastReserved(0); !ok || ip != addr("10.0.0.9") {
		t.Fatalf("cursor 0 = %v", ip)
	}
}

func testGC(t *testing.T, s Store) {
	mustReserve(t, s, att(1), "10.0.0.2")
	mustReserve(t, s, att(2), "10.0.0.3")
	mustReserve(t, s, att(3), "10.0.0.4")
	keep := func(a Attachment) bool { return a == att(2) }
	if err := s.GC(keep); err != nil {
		t.Fatal(err)
	}
	res, _ := s.List()
	if len(res) != 1 || res[0].Owner != att(2) {
		t.Fatalf("after GC: %v", res)
	}
	if got := heldStr(t, s, att(1)); got != "" {
		t.Fatalf("GC'd attachment still holds %q", got)
	}
	if err := s.GC(func(Attachment) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.List(); len(res) != 0 {
		t.Fatalf("empty valid list left %v", res)
	}
}
