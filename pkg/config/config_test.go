package config

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// conf is a valid config with overrides; a nil value deletes the key.
func conf(t *testing.T, over map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"cniVersion": "1.1.0", "name": "net", "type": "nswire",
		"ipam": map[string]any{"type": "nswire-ipam", "subnet": "10.0.0.0/24"},
	}
	for k, v := range over {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDefaults(t *testing.T) {
	n, err := Load(conf(t, nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if n.Mode != ModeBridge || n.Bridge != DefaultBridge || n.MTU != 0 || n.MAC != nil || n.LogFile != "" {
		t.Errorf("defaults: mode %q bridge %q mtu %d mac %v logFile %q", n.Mode, n.Bridge, n.MTU, n.MAC, n.LogFile)
	}
	if !n.Bridged() || !n.Masquerade() || !n.Hairpin() || !n.Isolated() || !n.InterContainer() || n.Internal {
		t.Errorf("bridge defaults: bridged %v masq %v hairpin %v isolated %v icc %v internal %v",
			n.Bridged(), n.Masquerade(), n.Hairpin(), n.Isolated(), n.InterContainer(), n.Internal)
	}
	r, err := Load(conf(t, map[string]any{"mode": "routed"}), "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Bridged() || r.Masquerade() {
		t.Errorf("routed defaults: bridged %v masq %v, want false false", r.Bridged(), r.Masquerade())
	}
	flags := map[string]func(*Net) bool{
		"ipMasq": (*Net).Masquerade, "hairpinMode": (*Net).Hairpin,
		"isolation": (*Net).Isolated, "icc": (*Net).InterContainer,
	}
	for key, get := range flags {
		for _, v := range []bool{true, false} {
			n, err := Load(conf(t, map[string]any{key: v}), "")
			if err != nil {
				t.Fatal(err)
			}
			if get(n) != v {
				t.Errorf("%s=%v: got %v", key, v, get(n))
			}
		}
	}
	i, err := Load(conf(t, map[string]any{"internal": true, "ipMasq": true}), "")
	if err != nil {
		t.Fatal(err)
	}
	if i.Masquerade() {
		t.Errorf("internal network masquerades despite ipMasq")
	}
	rm, _ := Load(conf(t, map[string]any{"mode": "routed", "ipMasq": true}), "")
	if !rm.Masquerade() {
		t.Errorf("routed with ipMasq=true does not masquerade")
	}
}

// TestMACPrecedence: runtimeConfig.mac, then args.cni.mac, then CNI_ARGS.
func TestMACPrecedence(t *testing.T) {
	args := map[string]any{"cni": map[string]any{"mac": "02:00:00:00:00:02"}}
	rc := map[string]any{"mac": "02:00:00:00:00:01"}
	cases := []struct {
		over    map[string]any
		cniArgs string
		want    string
	}{
		{map[string]any{"runtimeConfig": rc, "args": args}, "MAC=02:00:00:00:00:03", "02:00:00:00:00:01"},
		{map[string]any{"args": args}, "MAC=02:00:00:00:00:03", "02:00:00:00:00:02"},
		{nil, "IgnoreUnknown=1;MAC=02:00:00:00:00:03;K8S_POD_NAME=x", "02:00:00:00:00:03"},
		{nil, "IgnoreUnknown=1", ""},
	}
	for _, c := range cases {
		n, err := Load(conf(t, c.over), c.cniArgs)
		if err != nil {
			t.Fatalf("%v %q: %v", c.over, c.cniArgs, err)
		}
		got := ""
		if n.MAC != nil {
			got = n.MAC.String()
		}
		if got != c.want {
			t.Errorf("%v %q: MAC %q, want %q", c.over, c.cniArgs, got, c.want)
		}
	}
}

// TestValidation: each rule rejects with its code and a message naming
// the field; each boundary value that is valid is accepted.
func TestValidation(t *testing.T) {
	pm := func(p ...map[string]any) map[string]any {
		l := make([]any, len(p))
		for i := range p {
			l[i] = p[i]
		}
		return map[string]any{"portMappings": l}
	}
	port := func(h, c int, proto, ip string) map[string]any {
		return map[string]any{"hostPort": h, "containerPort": c, "protocol": proto, "hostIP": ip}
	}
	bw := func(k string, v uint64, k2 string, v2 uint64) map[string]any {
		return map[string]any{"bandwidth": map[string]any{k: v, k2: v2}}
	}
	cases := []struct {
		name    string
		over    map[string]any
		cniArgs string
		code    uint // 0: accepted
		field   string
	}{
		{"name missing", map[string]any{"name": nil}, "", 7, "name"},
		{"name traversal", map[string]any{"name": "../x"}, "", 7, "name"},
		{"name slash", map[string]any{"name": "a/b"}, "", 7, "name"},
		{"name dotdot", map[string]any{"name": ".."}, "", 7, "name"},
		{"name leading dash", map[string]any{"name": "-x"}, "", 7, "name"},
		{"name control char", map[string]any{"name": "a\x01"}, "", 7, "name"},
		{"name newline", map[string]any{"name": "a\n"}, "", 7, "name"},
		{"name unicode", map[string]any{"name": "né"}, "", 7, "name"},
		{"name 101", map[string]any{"name": strings.Repeat("n", 101)}, "", 7, "name"},
		{"name 100", map[string]any{"name": strings.Repeat("n", 100)}, "", 0, ""},
		{"name wrong type", map[string]any{"name": 5}, "", 6, "name"},
		{"mode unknown", map[string]any{"mode": "sideways"}, "", 7, "mode"},
		{"mode routed ignores bridge", map[string]any{"mode": "routed", "bridge": "a-much-too-long-bridge"}, "", 0, ""},
		{"bridge 16", map[string]any{"bridge": strings.Repeat("b", 16)}, "", 7, "bridge"},
		{"bridge 15", map[string]any{"bridge": strings.Repeat("b", 15)}, "", 0, ""},
		{"bridge empty", map[string]any{"bridge": ""}, "", 7, "bridge"},
		{"bridge slash", map[string]any{"bridge": "br/0"}, "", 7, "bridge"},
		{"bridge colon", map[string]any{"bridge": "br:0"}, "", 7, "bridge"},
		{"bridge space", map[string]any{"bridge": "br 0"}, "", 7, "bridge"},
		{"bridge dot", map[string]any{"bridge": "."}, "", 7, "bridge"},
		{"bridge dotdot", map[string]any{"bridge": ".."}, "", 7, "bridge"},
		{"bridge DEL char", map[string]any{"bridge": "br\x7f"}, "", 7, "bridge"},
		{"mtu 67", map[string]any{"mtu": 67}, "", 7, "mtu"},
		{"mtu 68", map[string]any{"mtu": 68}, "", 0, ""},
		{"mtu 65535", map[string]any{"mtu": 65535}, "", 0, ""},
		{"mtu 65536", map[string]any{"mtu": 65536}, "", 7, "mtu"},
		{"mtu negative", map[string]any{"mtu": -1}, "", 7, "mtu"},
		{"mtu string", map[string]any{"mtu": "big"}, "", 6, "mtu"},
		{"mtu float", map[string]any{"mtu": 1500.5}, "", 6, "mtu"},
		{"ipMasq string", map[string]any{"ipMasq": "yes"}, "", 6, "ipMasq"},
		{"ipam missing", map[string]any{"ipam": nil}, "", 7, "ipam.type"},
		{"ipam type empty", map[string]any{"ipam": map[string]any{}}, "", 7, "ipam.type"},
		{"ipam type traversal", map[string]any{"ipam": map[string]any{"type": "../x"}}, "", 7, "ipam.type"},
		{"ipam type path", map[string]any{"ipam": map[string]any{"type": "/bin/sh"}}, "", 7, "ipam.type"},
		{"ipam type dot", map[string]any{"ipam": map[string]any{"type": "a.b"}}, "", 7, "ipam.type"},
		{"ipam type long", map[string]any{"ipam": map[string]any{"type": strings.Repeat("i", 16)}}, "", 7, "ipam.type"},
		{"ipam delegate", map[string]any{"ipam": map[string]any{"type": "host-local"}}, "", 0, ""},
		{"logLevel unknown", map[string]any{"logLevel": "trace"}, "", 7, "logLevel"},
		{"logLevel debug", map[string]any{"logLevel": "debug"}, "", 0, ""},
		{"mac multicast", map[string]any{"runtimeConfig": map[string]any{"mac": "01:00:5e:00:00:01"}}, "", 7, "runtimeConfig.mac"},
		{"mac 8 bytes", map[string]any{"runtimeConfig": map[string]any{"mac": "02:00:00:00:00:00:00:01"}}, "", 7, "runtimeConfig.mac"},
		{"mac garbage args", map[string]any{"args": map[string]any{"cni": map[string]any{"mac": "zz"}}}, "", 7, "args.cni.mac"},
		{"mac garbage CNI_ARGS", nil, "MAC=zz", 7, "CNI_ARGS MAC"},
		{"ips bad runtimeConfig", map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.300"}}}, "", 7, "runtimeConfig.ips"},
		{"ips bad args", map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"x"}}}}, "", 7, "args.cni.ips"},
		{"ips good", map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.5/24", "fd00::5"}}}, "", 0, ""},
		{"port hostPort 0", map[string]any{"runtimeConfig": pm(port(0, 80, "tcp", ""))}, "", 7, "runtimeConfig.portMappings[0].hostPort"},
		{"port hostPort 65536", map[string]any{"runtimeConfig": pm(port(65536, 80, "tcp", ""))}, "", 7, "runtimeConfig.portMappings[0].hostPort"},
		{"port containerPort 0", map[string]any{"runtimeConfig": pm(port(80, 0, "tcp", ""))}, "", 7, "runtimeConfig.portMappings[0].containerPort"},
		{"port protocol", map[string]any{"runtimeConfig": pm(port(80, 80, "icmp", ""))}, "", 7, "runtimeConfig.portMappings[0].protocol"},
		{"port hostIP", map[string]any{"runtimeConfig": pm(port(80, 80, "tcp", "nope"))}, "", 7, "runtimeConfig.portMappings[0].hostIP"},
		{"port hostIP multicast", map[string]any{"runtimeConfig": pm(port(80, 80, "tcp", "224.0.0.1"))}, "", 7, "runtimeConfig.portMappings[0].hostIP"},
		{"port overlap", map[string]any{"runtimeConfig": pm(port(80, 80, "tcp", "127.0.0.1"), port(80, 81, "tcp", ""))}, "", 7, "runtimeConfig.portMappings[1]"},
		{"port same port other proto", map[string]any{"runtimeConfig": pm(port(80, 80, "tcp", ""), port(80, 80, "udp", ""))}, "", 0, ""},
		{"port hostPort string", map[string]any{"runtimeConfig": map[string]any{"portMappings": []any{map[string]any{"hostPort": "80"}}}}, "", 6, "runtimeConfig.portMappings.hostPort"},
		{"bandwidth rate without burst", map[string]any{"runtimeConfig": bw("ingressRate", 1000, "egressRate", 0)}, "", 7, "runtimeConfig.bandwidth.ingressRate"},
		{"bandwidth burst without rate", map[string]any{"runtimeConfig": bw("egressBurst", 1000, "ingressRate", 0)}, "", 7, "runtimeConfig.bandwidth.egressBurst"},
		{"bandwidth rate below 8", map[string]any{"runtimeConfig": bw("ingressRate", 7, "ingressBurst", 1000)}, "", 7, "runtimeConfig.bandwidth.ingressRate"},
		{"bandwidth burst below 8", map[string]any{"runtimeConfig": bw("egressRate", 1000, "egressBurst", 7)}, "", 7, "runtimeConfig.bandwidth.egressBurst"},
		{"bandwidth burst huge", map[string]any{"runtimeConfig": bw("egressRate", 1000, "egressBurst", 1<<40)}, "", 7, "runtimeConfig.bandwidth.egressBurst"},
		{"bandwidth burst beyond the kernel's bucket", map[string]any{"runtimeConfig": bw("egressRate", 8, "egressBurst", 1<<30)}, "", 0, ""},
		{"bandwidth as containerd derives it", map[string]any{"runtimeConfig": bw("ingressRate", 1_000_000, "ingressBurst", 1<<32-1)}, "", 0, ""},
		{"bandwidth ok", map[string]any{"runtimeConfig": bw("egressRate", 1_000_000, "egressBurst", 100_000)}, "", 0, ""},
		{"bandwidth negative", map[string]any{"runtimeConfig": map[string]any{"bandwidth": map[string]any{"ingressRate": -1}}}, "", 6, "runtimeConfig.bandwidth.ingressRate"},
		{"prevResult garbage", map[string]any{"prevResult": map[string]any{"ips": "x"}}, "", 6, "prevResult"},
		{"not json", map[string]any{"name": func() {}}, "", 6, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdin []byte
			if _, bad := c.over["name"].(func()); bad {
				stdin = []byte(`{"name":`)
			} else {
				stdin = conf(t, c.over)
			}
			n, err := Load(stdin, c.cniArgs)
			if c.code == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				checkNet(t, n)
				return
			}
			e, ok := err.(*types.Error)
			if !ok {
				t.Fatalf("got %T %v, want *types.Error code %d", err, err, c.code)
			}
			if containerArg(c.field) {
				// DEL, GC and STATUS never read the container's arguments.
				if _, err := LoadNetwork(stdin); err != nil {
					t.Errorf("LoadNetwork refused what only Load should check: %v", err)
				}
			}
			if e.Code != c.code || !strings.Contains(e.Msg, c.field) {
				t.Errorf("got code %d %q, want code %d naming %q", e.Code, e.Msg, c.code, c.field)
			}
			if !fieldRe.MatchString(e.Msg) && e.Code == 7 {
				t.Errorf("message %q does not start with the field", e.Msg)
			}
		})
	}
}

func containerArg(field string) bool {
	for _, p := range []string{"runtimeConfig", "args", "CNI_ARGS"} {
		if strings.HasPrefix(field, p) {
			return true
		}
	}
	return false
}

// TestPrevResultEveryVersion: Load accepts a prevResult of each result
// format in a config of the same cniVersion.
func TestPrevResultEveryVersion(t *testing.T) {
	for v, r := range prevResults {
		if v == "0.2.0" {
			continue // nswire does not speak 0.2.0; skel refuses it first
		}
		n, err := Load(conf(t, map[string]any{"cniVersion": v, "prevResult": json.RawMessage(r)}), "")
		if err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		if n.PrevResult == nil {
			t.Errorf("%s: prevResult dropped", v)
		}
	}
}

// TestPortMappingsAccepted: lists the portmap plugin accepts pass, and
// read back as the firewall wants them.
func TestPortMappingsAccepted(t *testing.T) {
	ok := []PortMapping{{HostPort: 80, ContainerPort: 80}, {HostPort: 80, ContainerPort: 80, Protocol: "UDP"},
		{HostPort: 81, ContainerPort: 80, Protocol: "sctp", HostIP: "::1"}, {HostPort: 82, ContainerPort: 80, HostIP: "127.0.0.1"},
		{HostPort: 82, ContainerPort: 80, HostIP: "10.0.0.1"}, {HostPort: 83, ContainerPort: 80, HostIP: "::ffff:10.0.0.2"}}
	if err := validatePorts(ok); err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct{ proto, addr string }{{"tcp", "invalid IP"}, {"udp", "invalid IP"},
		{"sctp", "::1"}, {"tcp", "127.0.0.1"}, {"tcp", "10.0.0.1"}, {"tcp", "10.0.0.2"}} {
		if p, a := ok[i].Proto(), ok[i].HostAddr().String(); p != want.proto || a != want.addr {
			t.Errorf("%+v reads as %s %s, want %s %s", ok[i], p, a, want.proto, want.addr)
		}
	}
}
