package firewall

import (
	"net"
	"reflect"
	"testing"
)

func TestNetworkRecordRoundTrip(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	nets := []Network{
		{Name: "a", Bridge: "br-a", Subnets: []*net.IPNet{cidr("10.1.0.0/24"), cidr("fd00:1::/64")},
			IPMasq: true, Isolation: true, ICC: true, NoMasquerade: []*net.IPNet{cidr("10.0.0.0/8")}},
		{Name: "routed.b-1", Subnets: []*net.IPNet{cidr("10.2.0.0/16")}, Internal: true},
	}
	var notes []string
	for _, n := range nets {
		notes = append(notes, networkRecord(n)...)
	}
	// Records nswire cannot read are skipped, not fatal.
	notes = append(notes, "", "subnet unknown 10.9.0.0/24", "net x")
	if got := parseNetworks(notes); !reflect.DeepEqual(got, nets) {
		t.Errorf("parseNetworks(%q)\n got %+v\nwant %+v", notes, got, nets)
	}
}
