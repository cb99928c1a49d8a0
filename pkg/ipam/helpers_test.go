package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// netConf builds a network config the way a runtime hands it to IPAM.
func netConf(t testing.TB, dataDir string, ranges string, extra ...string) []byte {
	t.Helper()
	ipamExtra := ""
	if dataDir != "" {
		ipamExtra = fmt.Sprintf(`,"dataDir":%q`, dataDir)
	}
	top := ""
	for _, e := range extra {
		top += "," + e
	}
	s := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"testnet","type":"bridge","ipam":{"type":"nswire-ipam","ranges":%s%s}%s}`, ranges, ipamExtra, top)
	if !json.Valid([]byte(s)) {
		t.Fatalf("bad test config %s", s)
	}
	return []byte(s)
}

func mustConfig(t testing.TB, ranges string, extra ...string) *Config {
	t.Helper()
	cfg, err := ParseConfig(netConf(t, "", ranges, extra...), "")
	if err != nil {
		t.Fatalf("ParseConfig(%s): %v", ranges, err)
	}
	return cfg
}

func errCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func att(i int) Attachment {
	return Attachment{ContainerID: fmt.Sprintf("c%04d", i), IfName: "eth0"}
}
