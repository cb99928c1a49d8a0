package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// The fuzz targets feed config.Load what a runtime may send: the network
// config (stdin) with runtimeConfig, args and prevResult, and CNI_ARGS.
// Invariants: no panic; a rejection is a *types.Error with code 1, 2, 4, 6
// or 7 whose message names the field; an accepted config satisfies every
// rule Validate states. Seeds: conf/*.conflist and testdata/fuzz/.

// fieldRe matches messages that start by naming the offending field.
var fieldRe = regexp.MustCompile(`^(name|mode|bridge|mtu|ipam\.type|logLevel|runtimeConfig\.[A-Za-z]+|args\.cni\.[a-z]+|CNI_ARGS [A-Z]+|prevResult|field "[^"]*")[:\[. ]`)

// checkLoad asserts the invariants of one Load call.
func checkLoad(t *testing.T, stdin []byte, cniArgs string) {
	t.Helper()
	n, err := Load(stdin, cniArgs)
	if err != nil {
		e, ok := err.(*types.Error)
		if !ok {
			t.Fatalf("rejection is %T, not *types.Error: %v", err, err)
		}
		switch e.Code {
		case types.ErrIncompatibleCNIVersion, types.ErrUnsupportedField, types.ErrInvalidEnvironmentVariables:
		case types.ErrDecodingFailure:
			if !fieldRe.MatchString(e.Msg) && e.Msg != "network config is not valid JSON" && e.Msg != "invalid prevResult" {
				t.Fatalf("decode error does not name the field: %q", e.Msg)
			}
		case types.ErrInvalidNetworkConfig:
			if !fieldRe.MatchString(e.Msg) {
				t.Fatalf("invalid-config error does not start with the field: %q", e.Msg)
			}
		default:
			t.Fatalf("code %d (want 1, 2, 4, 6 or 7): %q %q", e.Code, e.Msg, e.Details)
		}
		return
	}
	checkNet(t, n)
}

// checkNet asserts what every accepted config guarantees the handlers.
func checkNet(t *testing.T, n *Net) {
	t.Helper()
	if !regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,99}$`).MatchString(n.Name) || strings.ContainsAny(n.Name, "/\x00") || n.Name == ".." {
		t.Fatalf("accepted network name %q", n.Name)
	}
	switch n.Mode {
	case ModeBridge:
		if ValidateIfName(n.Bridge) != nil {
			t.Fatalf("accepted bridge %q", n.Bridge)
		}
	case ModeRouted:
	default:
		t.Fatalf("accepted mode %q", n.Mode)
	}
	if n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535) {
		t.Fatalf("accepted mtu %d", n.MTU)
	}
	if n.IPAM.Type == "" || strings.ContainsAny(n.IPAM.Type, "./\x00") || len(n.IPAM.Type) > 15 {
		t.Fatalf("accepted ipam.type %q", n.IPAM.Type)
	}
	if n.MAC != nil && (len(n.MAC) != 6 || n.MAC[0]&1 == 1) {
		t.Fatalf("accepted MAC %v", n.MAC)
	}
	if err := validatePorts(n.RuntimeConfig.PortMappings); err != nil {
		t.Fatalf("accepted ports: %v", err)
	}
	for _, p := range n.RuntimeConfig.PortMappings {
		if a := p.HostAddr(); p.HostIP != "" && (!a.IsValid() || a.Zone() != "") {
			t.Fatalf("accepted hostIP %q, which reads as %v", p.HostIP, a)
		}
	}
	if b := n.RuntimeConfig.Bandwidth; b != nil && b.validate() != nil {
		t.Fatalf("accepted bandwidth %+v", *b)
	}
	if n.Masquerade() && n.Internal {
		t.Fatalf("internal network masquerades")
	}
}

// confSeeds are the plugin entries of the shipped conflists, completed as
// libcni completes them (cniVersion and name from the list).
func confSeeds(f *testing.F) [][]byte {
	files, err := filepath.Glob("../../conf/*.conflist")
	if err != nil || len(files) == 0 {
		f.Fatalf("no conflists: %v", err)
	}
	var out [][]byte
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var list struct {
			CNIVersion string           `json:"cniVersion"`
			Name       string           `json:"name"`
			Plugins    []map[string]any `json:"plugins"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		for _, p := range list.Plugins {
			p["cniVersion"], p["name"] = list.CNIVersion, list.Name
			pb, _ := json.Marshal(p)
			out = append(out, pb)
		}
	}
	return out
}

const baseConf = `{"cniVersion":"1.1.0","name":"fz","type":"nswire","ipam":{"type":"nswire-ipam","subnet":"10.0.0.0/24"}`

func FuzzLoad(f *testing.F) {
	for _, s := range confSeeds(f) {
		f.Add(s, "")
		f.Add(s, "IgnoreUnknown=1;MAC=02:00:00:00:00:01")
	}
	f.Add([]byte(baseConf+`}`), "")
	f.Add([]byte(baseConf+`,"mtu":"big"}`), "")
	f.Add([]byte(baseConf+`}garbage`), "")
	f.Add([]byte(`null`), "")
	f.Add([]byte(``), "MAC=")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		checkLoad(t, stdin, cniArgs)
	})
}

// FuzzCapabilityArgs fuzzes runtimeConfig (portMappings, bandwidth, ips,
// mac, dns), args.cni and CNI_ARGS inside an otherwise valid config.
func FuzzCapabilityArgs(f *testing.F) {
	f.Add([]byte(`{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`), []byte(`{}`), "")
	f.Add([]byte(`{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"},{"hostPort":8080,"containerPort":81,"protocol":"tcp"}]}`), []byte(`{}`), "")
	f.Add([]byte(`{"bandwidth":{"ingressRate":8,"ingressBurst":18446744073709551615}}`), []byte(`{}`), "")
	f.Add([]byte(`{"bandwidth":{"egressRate":1000000,"egressBurst":0}}`), []byte(`{}`), "")
	f.Add([]byte(`{"ips":["10.0.0.5/24","fd00::5"],"mac":"02:00:00:00:00:05"}`), []byte(`{"cni":{"ips":["10.0.0.6"],"mac":"02:00:00:00:00:06"}}`), "MAC=02:00:00:00:00:07")
	f.Add([]byte(`{"mac":"01:00:5e:00:00:01"}`), []byte(`null`), "")
	f.Add([]byte(`{"dns":{"servers":["10.0.0.53"],"searches":["x"],"options":["ndots:2"]}}`), []byte(`{"cni":{"ips":["not-an-ip"]}}`), "K8S_POD_NAME=a;MAC=zz")
	f.Add([]byte(`{"portMappings":[{"hostPort":-1,"containerPort":70000,"protocol":"icmp","hostIP":"224.0.0.1"}]}`), []byte(`{}`), ";;=;MAC")
	f.Fuzz(func(t *testing.T, runtimeConfig, args []byte, cniArgs string) {
		stdin := append([]byte(baseConf+`,"runtimeConfig":`), runtimeConfig...)
		stdin = append(append(stdin, `,"args":`...), args...)
		stdin = append(stdin, '}')
		checkLoad(t, stdin, cniArgs)
	})
}

// prevResults are one ADD result per result format: 0.1.0/0.2.0 (types
// 020), 0.3.x/0.4.0 (types 040) and 1.x (types 100).
var prevResults = map[string]string{
	"0.2.0": `{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{}}`,
	"0.3.0": `{"cniVersion":"0.3.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.0.0.2/24","gateway":"10.0.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}`,
	"0.3.1": `{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/x"}],"ips":[{"version":"6","interface":0,"address":"fd00::2/64"}],"dns":{}}`,
	"0.4.0": `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","interface":5,"address":"10.0.0.2/24"}],"dns":{}}`,
	"1.0.0": `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"interface":0,"address":"10.0.0.2/24","gateway":"10.0.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],"dns":{}}`,
	"1.1.0": `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","mtu":1400,"sandbox":"/x","socketPath":"/s","pciID":"0000:00:01.0"}],"ips":[{"interface":0,"address":"10.0.0.2/24"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0}],"dns":{"nameservers":["10.0.0.53"]}}`,
}

// FuzzPrevResult fuzzes the prevResult of every cniVersion through Load.
func FuzzPrevResult(f *testing.F) {
	for v, r := range prevResults {
		f.Add(v, []byte(r))
		f.Add(v, []byte(`{"cniVersion":"`+v+`","ips":[{"address":"nonsense"}]}`))
	}
	f.Add("1.1.0", []byte(`null`))
	f.Add("9.9.9", []byte(prevResults["1.1.0"]))
	f.Add("", []byte(prevResults["0.3.0"]))
	f.Fuzz(func(t *testing.T, cniVersion string, prevResult []byte) {
		v, _ := json.Marshal(cniVersion)
		stdin := append([]byte(`{"cniVersion":`+string(v)+`,"name":"fz","type":"nswire","ipam":{"type":"nswire-ipam"},"prevResult":`), prevResult...)
		stdin = append(stdin, '}')
		checkLoad(t, stdin, "")
	})
}
