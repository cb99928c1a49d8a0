package ipam

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig: any input either parses into ranges the allocator can
// rely on, or fails with a typed 4/6/7 error. Seeds: testdata/fuzz.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`), "")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		cfg, err := ParseConfig(conf, args)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code != 4 && te.Code != 6 && te.Code != 7 {
				t.Fatalf("untyped or unexpected error %#v", err)
			}
			return
		}
		checkParsed(t, cfg)
	})
}

func checkParsed(t *testing.T, cfg *Config) {
	if validNetworkName(cfg.Name) != nil || len(cfg.RangeSets) == 0 {
		t.Fatalf("accepted bad config %+v", cfg)
	}
	for _, set := range cfg.RangeSets {
		for _, r := range set {
			first, last := hostBounds(r.Subnet)
			if r.RangeEnd.Less(r.RangeStart) || r.RangeStart.Less(first) || last.Less(r.RangeEnd) {
				t.Fatalf("range %s escapes the host addresses of %s", r, r.Subnet)
			}
			if r.RangeStart == r.RangeEnd && r.RangeStart == r.Gateway {
				t.Fatalf("range %s has nothing to allocate", r)
			}
			if r.Gateway.IsValid() && !r.Subnet.Contains(r.Gateway) {
				t.Fatalf("gateway %s outside %s", r.Gateway, r.Subnet)
			}
		}
	}
}
