package ipam

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestAllocateEdgeRanges allocates until the range set is exhausted and
// checks the exact sequence, then that the next ADD fails with code 11.
func TestAllocateEdgeRanges(t *testing.T) {
	tests := []struct {
		name    string
		ranges  string
		want    []string // one entry per ADD: the addresses, one per set, joined by space
		gateway string
	}{
		{"v4 /30", `[[{"subnet":"10.0.0.0/30"}]]`, []string{"10.0.0.2"}, "10.0.0.1"},
		{"v4 /31 default gateway low", `[[{"subnet":"10.0.0.0/31"}]]`, []string{"10.0.0.1"}, "10.0.0.0"},
		{"v4 /31 gateway high", `[[{"subnet":"10.0.0.0/31","gateway":"10.0.0.1"}]]`, []string{"10.0.0.0"}, "10.0.0.1"},
		{"v4 /32", `[[{"subnet":"10.0.0.5/32"}]]`, []string{"10.0.0.5"}, ""},
		{"v4 one address", `[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.9"}]]`, []string{"10.0.0.9"}, "10.0.0.1"},
		{"v4 two addresses", `[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.10"}]]`, []string{"10.0.0.9", "10.0.0.10"}, "10.0.0.1"},
		{"v4 three addresses", `[[{"subnet":"10.0.0.0/29","rangeStart":"10.0.0.2","rangeEnd":"10.0.0.4"}]]`, []string{"10.0.0.2", "10.0.0.3", "10.0.0.4"}, "10.0.0.1"},
		{"v4 gateway inside range", `[[{"subnet":"10.0.0.0/29","rangeStart":"10.0.0.2","rangeEnd":"10.0.0.4","gateway":"10.0.0.3"}]]`, []string{"10.0.0.2", "10.0.0.4"}, "10.0.0.3"},
		{"v4 gateway outside range", `[[{"subnet":"10.0.0.0/29","rangeStart":"10.0.0.5","rangeEnd":"10.0.0.6","gateway":"10.0.0.1"}]]`, []string{"10.0.0.5", "10.0.0.6"}, "10.0.0.1"},
		{"v4 bounds on network and broadcast", `[[{"subnet":"10.0.0.0/29","rangeStart":"10.0.0.0","rangeEnd":"10.0.0.7"}]]`, []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}, "10.0.0.1"},
		{"v6 /126", `[[{"subnet":"fd00::/126"}]]`, []string{"fd00::2", "fd00::3"}, "fd00::1"},
		{"v6 /127", `[[{"subnet":"fd00::/127"}]]`, []string{"fd00::1"}, "fd00::"},
		{"v6 /128", `[[{"subnet":"fd00::7/128"}]]`, []string{"fd00::7"}, ""},
		{"v6 one address", `[[{"subnet":"fd00::/64","rangeStart":"fd00::10","rangeEnd":"fd00::10"}]]`, []string{"fd00::10"}, "fd00::1"},
		{"v6 three addresses gateway inside", `[[{"subnet":"fd00::/120","rangeStart":"fd00::1","rangeEnd":"fd00::4"}]]`, []string{"fd00::2", "fd00::3", "fd00::4"}, "fd00::1"},
		{"two ranges in a set", `[[{"subnet":"10.0.0.0/30"},{"subnet":"10.0.1.0/30"}]]`, []string{"10.0.0.2", "10.0.1.2"}, ""},
		{"dual stack", `[[{"subnet":"10.0.0.0/30"}],[{"subnet":"fd00::/127"}]]`, []string{"10.0.0.2 fd00::1"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustConfig(t, tc.ranges)
			al := allocator{store: NewMemStore(), sets: cfg.RangeSets}
			for i, want := range tc.want {
				leases, err := al.allocate(att(i), nil)
				if err != nil {
					t.Fatalf("ADD %d: %v", i, err)
				}
				if got := joinAddrs(addrs(leases)); got != want {
					t.Fatalf("ADD %d = %s, want %s", i, got, want)
				}
				if tc.gateway != "" && leases[0].Range.Gateway.String() != tc.gateway {
					t.Errorf("gateway = %s, want %s", leases[0].Range.Gateway, tc.gateway)
				}
				if tc.gateway == "" && len(cfg.RangeSets[0][0].Subnet.String()) > 0 && cfg.RangeSets[0][0].Subnet.IsSingleIP() && leases[0].Range.Gateway.IsValid() {
					t.Errorf("single-address subnet got gateway %s", leases[0].Range.Gateway)
				}
			}
			_, err := al.allocate(att(len(tc.want)), nil)
			if errCode(err) != types.ErrTryAgainLater {
				t.Fatalf("ADD on full range: err = %v, want code 11", err)
			}
			assertOwned(t, al.store, len(tc.want))
		})
	}
}

func joinAddrs(ips []netip.Addr) string {
	s := ""
	for i, ip := range ips {
		if i > 0 {
			s += " "
		}
		s += ip.String()
	}
	return s
}

// assertOwned checks how many attachments hold something: a failed ADD
// must not leave a partial reservation behind.
func assertOwned(t *testing.T, s Store, want int) {
	t.Helper()
	res, _ := s.List()
	owners := map[Attachment]bool{}
	for _, r := range res {
		owners[r.Owner] = true
	}
	if len(owners) != want {
		t.Fatalf("%d attachments hold addresses, want %d: %v", len(owners), want, res)
	}
}

func TestAllocateContinuesAfterLastReserved(t *testing.T) {
	cfg := mustConfig(t, `[[{"subnet":"10.0.0.0/29"}]]`) // .2 .. .6
	al := allocator{store: NewMemStore(), sets: cfg.RangeSets}
	var got []string
	for i := range 3 {
		l, err := al.allocate(att(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l[0].IP.String())
	}
	_ = al.store.Release(att(0)) // frees .2
	for i := 3; i < 6; i++ {
		l, err := al.allocate(att(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l[0].IP.String())
	}
	want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.2"}
	if !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v (freed address reused only after wrap)", got, want)
	}
}

func TestAllocateIdempotent(t *testing.T) {
	cfg := mustConfig(t, `[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]]`)
	al := allocator{store: NewMemStore(), sets: cfg.RangeSets}
	first, err := al.allocate(att(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := al.allocate(att(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if joinAddrs(addrs(first)) != joinAddrs(addrs(again)) {
		t.Fatalf("repeated ADD gave %v then %v", addrs(first), addrs(again))
	}
}

func TestAllocateRequested(t *testing.T) {
	dual := `[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/120"}]]`
	tests := []struct {
		name      string
		requested []string
		taken     []string // held by another attachment beforehand
		want      string
		code      uint
	}{
		{"v4 only, v6 dynamic", []string{"10.0.0.50"}, nil, "10.0.0.50 fd00::2", 0},
		{"both", []string{"fd00::9", "10.0.0.50"}, nil, "10.0.0.50 fd00::9", 0},
		{"taken", []string{"10.0.0.50"}, []string{"10.0.0.50"}, "", types.ErrTryAgainLater},
		{"all or nothing", []string{"10.0.0.50", "fd00::9"}, []string{"fd00::9"}, "", types.ErrTryAgainLater},
		{"outside", []string{"10.9.0.1"}, nil, "", types.ErrInvalidNetworkConfig},
		{"gateway", []string{"10.0.0.1"}, nil, "", types.ErrInvalidNetworkConfig},
		{"two in one set", []string{"10.0.0.5", "10.0.0.6"}, nil, "", types.ErrInvalidNetworkConfig},
		{"network address", []string{"10.0.0.0"}, nil, "", types.ErrInvalidNetworkConfig},
		{"broadcast", []string{"10.0.0.255"}, nil, "", types.ErrInvalidNetworkConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustConfig(t, dual)
			al := allocator{store: NewMemStore(), sets: cfg.RangeSets}
			other := Attachment{ContainerID: "other", IfName: "eth0"}
			for _, s := range tc.taken {
				if err := al.store.Reserve(other, []netip.Addr{addr(s)}); err != nil {
					t.Fatal(err)
				}
			}
			var req []netip.Addr
			for _, s := range tc.requested {
				req = append(req, addr(s))
			}
			leases, err := al.allocate(att(1), req)
			if tc.code != 0 {
				if errCode(err) != tc.code {
					t.Fatalf("err = %v, want code %d", err, tc.code)
				}
				if held, _ := al.store.Held(att(1)); len(held) != 0 {
					t.Fatalf("failed ADD left %v reserved", held)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := joinAddrs(addrs(leases)); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestExhaustionLeavesNothing: with the v6 set full, a dual-stack ADD must
// not keep its v4 address, and the error names the full range set.
func TestExhaustionLeavesNothing(t *testing.T) {
	cfg := mustConfig(t, `[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/127"}]]`)
	al := allocator{store: NewMemStore(), sets: cfg.RangeSets}
	if _, err := al.allocate(att(0), nil); err != nil {
		t.Fatal(err)
	}
	_, err := al.allocate(att(1), nil)
	if errCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "range set 1 (fd00::-fd00::1)") {
		t.Fatalf("err = %v, want code 11 naming range set 1", err)
	}
	assertOwned(t, al.store, 1)
	if free, _ := al.hasFree(1); free {
		t.Fatal("hasFree on full set")
	}
}
