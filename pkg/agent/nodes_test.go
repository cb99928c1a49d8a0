package agent

import (
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// node builds a Node created at second `age` with pod CIDRs and InternalIPs.
func node(name string, age int, cidrs []string, ips ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(age), 0))}}
	n.Spec.PodCIDRs = cidrs
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	return n
}

func TestDesiredRoutes(t *testing.T) {
	legacy := node("legacy", 1, nil, "192.0.2.6")
	legacy.Spec.PodCIDR = "10.244.6.0/24" // written before dual-stack: no podCIDRs
	nodes := []*corev1.Node{
		node("self", 1, []string{"10.244.1.0/24"}, "192.0.2.1"),
		node("dual", 1, []string{"10.244.2.0/24", "fd00:10:244:2::/64"}, "fd00::2", "192.0.2.2"),
		node("noaddr", 1, []string{"10.244.3.0/24"}),
		node("v4only", 1, []string{"10.244.4.0/24", "fd00:10:244:4::/64"}, "192.0.2.4"),
		node("old", 1, []string{"10.244.5.0/24"}, "192.0.2.50"),
		node("new", 2, []string{"10.244.5.0/24"}, "192.0.2.51"),
		node("thief", 3, []string{"10.244.1.0/24"}, "192.0.2.9"),
		node("nocidr", 1, nil, "192.0.2.7"),
		legacy,
	}
	want, skips := DesiredRoutes(nodes, "self")
	got := map[string]string{}
	for _, w := range want {
		got[w.Dst.String()] = w.Node + " " + w.Gw.String()
	}
	expect := map[string]string{
		"10.244.2.0/24":      "dual 192.0.2.2",
		"fd00:10:244:2::/64": "dual fd00::2",
		"10.244.4.0/24":      "v4only 192.0.2.4",
		"10.244.5.0/24":      "new 192.0.2.51", // the newest claim wins
		"10.244.6.0/24":      "legacy 192.0.2.6",
	}
	if len(got) != len(expect) {
		t.Errorf("routes %v, want %v", got, expect)
	}
	for dst, w := range expect {
		if got[dst] != w {
			t.Errorf("%s: got %q, want %q", dst, got[dst], w)
		}
	}
	reasons := map[string]string{}
	for _, s := range skips {
		reasons[s.Node+" "+s.Dst.String()] = s.Reason
	}
	for key, reason := range map[string]string{
		"noaddr 10.244.3.0/24":      ReasonNoAddress,
		"v4only fd00:10:244:4::/64": ReasonNoAddress,
		"old 10.244.5.0/24":         ReasonConflict,
		"thief 10.244.1.0/24":       ReasonConflict, // never route our own pod CIDR away
	} {
		if reasons[key] != reason {
			t.Errorf("%s: reason %q, want %q", key, reasons[key], reason)
		}
	}
	if len(skips) != 4 {
		t.Errorf("skips %+v", skips)
	}
}

func TestInternalIPFamily(t *testing.T) {
	n := node("n", 1, nil, "::ffff:192.0.2.1", "fd00::1")
	if ip, ok := InternalIP(n, netip.MustParsePrefix("10.0.0.0/8")); !ok || ip.String() != "192.0.2.1" {
		t.Errorf("v4: %v %v", ip, ok)
	}
	if ip, ok := InternalIP(n, netip.MustParsePrefix("fd00:1::/64")); !ok || ip.String() != "fd00::1" {
		t.Errorf("v6: %v %v", ip, ok)
	}
}
