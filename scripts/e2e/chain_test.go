package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/testutil"
)

// chainCase is one conflist: nswire followed by reference meta-plugins.
type chainCase struct {
	version string
	backend string           // portmap backend; "" leaves portmap out
	tuning  map[string]any   // tuning plugin config; nil leaves it out
	extra   []map[string]any // more plugins after those
	note    string           // logged when the case fails
}

// TestChainedReferencePlugins chains the reference portmap, tuning,
// bandwidth and firewall plugins (v1.10.0) after nswire through libcni:
// ADD, CHECK and DEL succeed, and what each plugin does works on top of
// nswire's result (published port, sysctl, qdiscs, iptables rules).
func TestChainedReferencePlugins(t *testing.T) {
	bandwidth := map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}}
	firewall := map[string]any{"type": "firewall", "backend": "iptables"}
	cases := map[string]chainCase{
		"1.1.0-portmap-iptables": {version: "1.1.0", backend: "iptables",
			tuning: map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "512"}},
			extra:  []map[string]any{bandwidth, firewall}},
		"0.4.0-portmap-nftables": {version: "0.4.0", backend: "nftables",
			tuning: map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "512"}},
			extra:  []map[string]any{bandwidth, firewall}},
		// tuning changing the container MAC after nswire wired it.
		"1.0.0-tuning-mac": {version: "1.0.0",
			tuning: map[string]any{"capabilities": map[string]bool{"mac": true}, "sysctl": map[string]string{"net.core.somaxconn": "512"}},
			note:   "with macSpoofCheck false, nswire's anti-spoofing keeps checking addresses but not the MAC tuning sets"},
	}
	idx := 0
	for name, tc := range cases {
		idx++
		i := idx
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			chain(t, tc, i)
		})
	}
}

func chain(t *testing.T, tc chainCase, idx int) {
	lk := newLeaks(t)
	h := lk.host(binDir, refDir)
	name, bridge := testutil.Name("e2e-chain"), testutil.Name("e2ecbr")
	lk.network(name, h.DataDir)
	subnet := fmt.Sprintf("10.190.%d.0/24", idx)
	plugins := []map[string]any{{
		"name": name, "type": "nswire", "bridge": bridge,
		"ipam": map[string]any{"type": "nswire-ipam", "dataDir": h.DataDir, "ranges": [][]map[string]string{{{"subnet": subnet}}}},
	}}
	if caps, ok := tc.tuning["capabilities"].(map[string]bool); ok && caps["mac"] {
		// A later plugin changes the MAC: nswire must not pin the one it saw.
		plugins[0]["macSpoofCheck"] = false
	}
	if tc.tuning != nil {
		p := map[string]any{"type": "tuning"}
		for k, v := range tc.tuning {
			p[k] = v
		}
		plugins = append(plugins, p)
	}
	if tc.backend != "" {
		plugins = append(plugins, map[string]any{"type": "portmap", "backend": tc.backend, "capabilities": map[string]bool{"portMappings": true}})
	}
	for _, p := range tc.extra {
		plugins = append(plugins, copyMap(p))
	}
	list := testutil.ConfList(t, tc.version, plugins...)
	t.Cleanup(func() {
		if t.Failed() && tc.note != "" {
			t.Log("note: " + tc.note)
		}
	})
	ctx := context.Background()

	a, b := lk.ns(), lk.ns()
	rtA, rtB := testutil.RT("chain-a", a, "eth0"), testutil.RT("chain-b", b, "eth0")
	bw := map[string]uint64{"ingressRate": 8_000_000, "ingressBurst": 800_000, "egressRate": 16_000_000, "egressBurst": 1_600_000}
	rtA.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": publishedPort, "containerPort": servicePort, "protocol": "tcp"}},
		"bandwidth":    bw,
	}
	tuningMAC := ""
	if caps, ok := tc.tuning["capabilities"].(map[string]bool); ok && caps["mac"] {
		tuningMAC = "02:e2:e0:aa:00:01"
		rtA.CapabilityArgs["mac"] = tuningMAC // only tuning declares mac
	}
	added := map[*libcni.RuntimeConf]*current.Result{}
	for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
		r, err := h.CNI.AddNetworkList(ctx, list, rt)
		if err != nil {
			t.Fatalf("ADD %s through the chain: %v", rt.ContainerID, err)
		}
		added[rt] = testutil.Result(t, r)
	}
	t.Cleanup(func() { // DEL even if the test failed half-way
		for rt := range added {
			_ = h.CNI.DelNetworkList(ctx, list, rt)
		}
	})
	resA, resB := added[rtA], added[rtB]
	ipA, gw := resA.IPs[0].Address.IP, resA.IPs[0].Gateway
	vethA := link.HostVethName(ident.Attachment{Network: name, ContainerID: rtA.ContainerID, IfName: "eth0"})

	// tuning
	if tc.tuning != nil {
		got := ""
		a.Run(func() error {
			b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
			got = strings.TrimSpace(string(b))
			return err
		})
		if got != "512" {
			t.Errorf("tuning: net.core.somaxconn is %q in the container, want 512", got)
		}
		if mac := tuningMAC; mac != "" {
			if got := a.Link("eth0").Attrs().HardwareAddr.String(); got != mac {
				t.Errorf("tuning: eth0 MAC %s, want %s", got, mac)
			}
			if got := resA.Interfaces[len(resA.Interfaces)-1].Mac; got != mac {
				t.Errorf("tuning: result MAC %s, want %s", got, mac)
			}
		}
	}

	// traffic between the containers and to the gateway
	serve(t, a, servicePort, "a")
	serve(t, b, servicePort, "b")
	serve(t, h.NS, 9, "host")
	expectTag(t, "a -> b", a, resB.IPs[0].Address.IP, servicePort, "b")
	expectTag(t, "b -> a", b, ipA, servicePort, "a")
	expectTag(t, "a -> gateway", a, gw, 9, "host")

	// portmap
	if tc.backend != "" {
		expectTag(t, "portmap: host -> gateway published port", h.NS, gw, publishedPort, "a")
		expectTag(t, "portmap: host -> 127.0.0.1 published port", h.NS, net.IPv4(127, 0, 0, 1), publishedPort, "a")
		expectTag(t, "portmap: b -> gateway published port (hairpin)", b, gw, publishedPort, "a")
	}
	rs := nftRuleset(t, h.NetNS)
	if tc.backend == "nftables" && !strings.Contains(rs, "table ip cni_hostport") {
		t.Errorf("portmap (nftables): no table ip cni_hostport:\n%s", rs)
	}
	if tc.backend == "iptables" && !strings.Contains(rs, "CNI-HOSTPORT-DNAT") {
		t.Errorf("portmap (iptables): no CNI-HOSTPORT-DNAT chain:\n%s", rs)
	}

	// bandwidth and firewall
	for _, p := range tc.extra {
		switch p["type"] {
		case "bandwidth":
			hv := h.Link(vethA)
			if q := rootQdisc(h.Handle(), hv.Attrs().Index); q == nil || q.Type() != "tbf" {
				t.Errorf("bandwidth: root qdisc of %s is %v, want tbf", vethA, q)
			}
			if !hasQdisc(h.Handle(), hv.Attrs().Index, "ingress") {
				t.Errorf("bandwidth: no ingress qdisc on %s", vethA)
			}
			if ifbs := linksWithPrefix(t, h, "bwp"); len(ifbs) != 1 {
				t.Errorf("bandwidth: ifb devices %v, want one", ifbs)
			}
		case "firewall":
			out, err := execIn(h.NetNS, nil, "iptables", "-w", "-S", "CNI-FORWARD")
			if err != nil {
				t.Errorf("firewall: %v", err)
			} else if !strings.Contains(out, ipA.String()) || !strings.Contains(out, "CNI-ADMIN") {
				t.Errorf("firewall: CNI-FORWARD lacks rules for %s:\n%s", ipA, out)
			}
		}
	}

	if testutil.Supports(tc.version, "CHECK") {
		for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
			if err := h.CNI.CheckNetworkList(ctx, list, rt); err != nil {
				t.Errorf("CHECK %s through the chain: %v", rt.ContainerID, err)
			}
		}
	}

	for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
		if err := h.CNI.DelNetworkList(ctx, list, rt); err != nil {
			t.Errorf("DEL %s through the chain: %v", rt.ContainerID, err)
		}
		if err := h.CNI.DelNetworkList(ctx, list, rt); err != nil {
			t.Errorf("second DEL %s through the chain: %v", rt.ContainerID, err)
		}
		delete(added, rt)
	}
	assertHostClean(t, h, name, h.DataDir)
	if ifbs := linksWithPrefix(t, h, "bwp"); len(ifbs) != 0 {
		t.Errorf("bandwidth: ifb devices %v survived DEL", ifbs)
	}
	if rs := nftRuleset(t, h.NetNS); strings.Contains(rs, ipA.String()+" ") || strings.Contains(rs, ipA.String()+"\n") {
		t.Errorf("rules naming %s survived DEL:\n%s", ipA, grepLines(rs, ipA.String()))
	}
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func linksWithPrefix(t *testing.T, h *testutil.Host, prefix string) []string {
	var out []string
	for _, n := range h.Links() {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
