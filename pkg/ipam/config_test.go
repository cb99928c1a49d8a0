package ipam

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		conf  string
		args  string
		code  uint
		field string
	}{
		{"not json", `{"name":`, "", types.ErrDecodingFailure, ""},
		{"no ipam", `{"name":"n","cniVersion":"1.1.0"}`, "", types.ErrInvalidNetworkConfig, "ipam"},
		{"traversal name", `{"name":"../x","ipam":{"subnet":"10.0.0.0/24"}}`, "", types.ErrInvalidNetworkConfig, "name"},
		{"slash name", `{"name":"a/b","ipam":{"subnet":"10.0.0.0/24"}}`, "", types.ErrInvalidNetworkConfig, "name"},
		{"control char name", "{\"name\":\"a\\u0001\",\"ipam\":{\"subnet\":\"10.0.0.0/24\"}}", "", types.ErrInvalidNetworkConfig, "name"},
		{"long name", `{"name":"` + strings.Repeat("a", 300) + `","ipam":{"subnet":"10.0.0.0/24"}}`, "", types.ErrInvalidNetworkConfig, "name"},
		{"relative dataDir", `{"name":"n","ipam":{"subnet":"10.0.0.0/24","dataDir":"x/y"}}`, "", types.ErrInvalidNetworkConfig, "ipam.dataDir"},
		{"no ranges", `{"name":"n","ipam":{}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges"},
		{"host bits", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.1/24"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].subnet"},
		{"bad subnet", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0/24"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].subnet"},
		{"start outside", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].rangeStart"},
		{"end before start", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.8"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].rangeEnd"},
		{"only gateway", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.1","rangeEnd":"10.0.0.1"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0]"},
		{"gateway outside subnet", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].gateway"},
		{"gateway broadcast", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"10.0.0.255"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].gateway"},
		{"gateway in /32", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.1/32","gateway":"10.0.0.1"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0].gateway"},
		{"/31 only gateway", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/31","rangeEnd":"10.0.0.0"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0][0]"},
		{"mixed families", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0]"},
		{"overlap", `{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges"},
		{"empty set", `{"name":"n","ipam":{"ranges":[[]]}}`, "", types.ErrInvalidNetworkConfig, "ipam.ranges[0]"},
		{"bad route", `{"name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"gw":"10.0.0.1"}]}}`, "", types.ErrInvalidNetworkConfig, "ipam.routes[0].dst"},
		{"bad ips capability", `{"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ips":["nope"]}}`, "", types.ErrInvalidNetworkConfig, "runtimeConfig.ips"},
		{"duplicate ips", `{"name":"n","ipam":{"subnet":"10.0.0.0/24"},"args":{"cni":{"ips":["10.0.0.5"]}}}`, "IP=10.0.0.5", types.ErrInvalidNetworkConfig, "args.cni.ips"},
		{"bad CNI_ARGS", `{"name":"n","ipam":{"subnet":"10.0.0.0/24"}}`, "garbage", types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
		{"bad ipRanges", `{"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"x"}]]}}`, "", types.ErrInvalidNetworkConfig, "runtimeConfig.ipRanges[0][0].subnet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.conf), tc.args)
			if errCode(err) != tc.code {
				t.Fatalf("err = %v (code %d), want code %d", err, errCode(err), tc.code)
			}
			if !strings.HasPrefix(err.(*types.Error).Msg, tc.field) {
				t.Fatalf("err %q does not name field %q", err, tc.field)
			}
		})
	}
}

func TestParseConfigSources(t *testing.T) {
	conf := `{"name":"n","cniVersion":"1.1.0",
		"ipam":{"type":"nswire-ipam","subnet":"10.0.0.0/24","ranges":[[{"subnet":"fd00::/64"}]],"routes":[{"dst":"0.0.0.0/0"}]},
		"runtimeConfig":{"ips":["fd00::5/64"]},
		"args":{"cni":{"ips":["10.0.0.7"]}}}`
	cfg, err := ParseConfig([]byte(conf), "IgnoreUnknown=1;K8S_POD_NAME=x")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RangeSets) != 2 || cfg.RangeSets[0][0].Subnet.String() != "10.0.0.0/24" {
		t.Fatalf("legacy flat range not first: %v", cfg.RangeSets)
	}
	if joinAddrs(cfg.Requested) != "10.0.0.7 fd00::5" || len(cfg.Routes) != 1 || cfg.DataDir != DefaultDataDir {
		t.Fatalf("cfg = %+v", cfg)
	}
	// The ipRanges capability replaces the configured ranges.
	conf = `{"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"192.168.0.0/30"}]]}}`
	cfg, err = ParseConfig([]byte(conf), "IP=192.168.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RangeSets) != 1 || cfg.RangeSets[0][0].Subnet.String() != "192.168.0.0/30" || joinAddrs(cfg.Requested) != "192.168.0.2" {
		t.Fatalf("cfg = %+v", cfg)
	}
}
