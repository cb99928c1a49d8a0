package ipam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultDataDir is host-local's default, so both plugins share state.
const DefaultDataDir = "/var/lib/cni/networks"

// Config is the validated IPAM configuration of one invocation.
type Config struct {
	Name       string
	CNIVersion string
	DataDir    string
	ResolvConf string
	Routes     []*types.Route
	RangeSets  []RangeSet
	// Requested holds the static addresses from runtimeConfig.ips,
	// args.cni.ips and CNI_ARGS IP=; they are granted all or nothing.
	Requested []netip.Addr
}

// rawRange is one range exactly as host-local spells it.
type rawRange struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

type rawIPAM struct {
	rawRange                  // legacy flat form
	Type       string         `json:"type"`
	Routes     []*types.Route `json:"routes"`
	DataDir    string         `json:"dataDir"`
	ResolvConf string         `json:"resolvConf"`
	Ranges     [][]rawRange   `json:"ranges"`
}

type rawNet struct {
	Name       string   `json:"name"`
	CNIVersion string   `json:"cniVersion"`
	IPAM       *rawIPAM `json:"ipam"`
	// The container's arguments are decoded by ParseConfig only, so that
	// DEL and GC never fail on them.
	RawRuntimeConfig json.RawMessage      `json:"runtimeConfig"`
	RawArgs          json.RawMessage      `json:"args"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`

	RuntimeConfig struct {
		IPRanges [][]rawRange `json:"ipRanges"`
		IPs      []string     `json:"ips"`
	} `json:"-"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"-"`
}

// decodeArgs decodes the container's arguments ADD and CHECK act on.
func (n *rawNet) decodeArgs() error {
	if err := decodeArg("runtimeConfig", n.RawRuntimeConfig, &n.RuntimeConfig); err != nil {
		return err
	}
	return decodeArg("args", n.RawArgs, &n.Args)
}

func decodeArg(field string, raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode "+field, err.Error())
	}
	return nil
}

// ParseConfig decodes and validates the full network config a delegated
// IPAM plugin receives, plus CNI_ARGS. Errors are *types.Error: 6 for
// undecodable JSON, 7 for invalid fields (named), 4 for bad CNI_ARGS.
func ParseConfig(stdin []byte, cniArgs string) (*Config, error) {
	n, cfg, err := parseBase(stdin)
	if err != nil {
		return nil, err
	}
	if err := n.decodeArgs(); err != nil {
		return nil, err
	}
	if cfg.ResolvConf = n.IPAM.ResolvConf; cfg.ResolvConf != "" && !strings.HasPrefix(cfg.ResolvConf, "/") {
		return nil, configError("ipam.resolvConf", "%q is not an absolute path", cfg.ResolvConf)
	}
	if cfg.Routes, err = checkRoutes(n.IPAM.Routes); err != nil {
		return nil, err
	}
	if cfg.RangeSets, err = parseRangeSets(n); err != nil {
		return nil, err
	}
	if cfg.Requested, err = parseRequested(n, cniArgs); err != nil {
		return nil, err
	}
	return cfg, nil
}

// DataDir is the validated ipam.dataDir of a network config (host-local's
// default when unset), read as DEL reads it: nothing else is checked.
func DataDir(stdin []byte) (string, error) {
	cfg, _, err := parseStoreConfig(stdin)
	if err != nil {
		return "", err
	}
	return cfg.DataDir, nil
}

// parseStoreConfig reads only what locating the store needs. DEL and GC use
// it so they keep working after the ranges were edited or broken.
func parseStoreConfig(stdin []byte) (*Config, *rawNet, error) {
	n, cfg, err := parseBase(stdin)
	return cfg, n, err
}

func parseBase(stdin []byte) (*rawNet, *Config, error) {
	var n rawNet
	dec := json.NewDecoder(bytes.NewReader(stdin))
	if err := dec.Decode(&n); err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, "decode network config", err.Error())
	}
	if err := validNetworkName(n.Name); err != nil {
		return nil, nil, err
	}
	if n.IPAM == nil {
		return nil, nil, configError("ipam", "missing")
	}
	cfg := &Config{Name: n.Name, CNIVersion: n.CNIVersion, DataDir: n.IPAM.DataDir}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	dir, err := validDataDir(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	cfg.DataDir = dir
	return &n, cfg, nil
}

func checkRoutes(routes []*types.Route) ([]*types.Route, error) {
	for i, r := range routes {
		if r == nil || r.Dst.IP == nil {
			return nil, configError(fmt.Sprintf("ipam.routes[%d].dst", i), "missing")
		}
	}
	return routes, nil
}

// parseRangeSets applies host-local's precedence, except that the ipRanges
// capability replaces the configured ranges instead of being prepended:
// the runtime asked for exactly those ranges.
func parseRangeSets(n *rawNet) ([]RangeSet, error) {
	field, raw := "ipam.ranges", n.IPAM.Ranges
	if n.IPAM.Subnet != "" {
		raw = append([][]rawRange{{n.IPAM.rawRange}}, raw...)
	}
	if len(n.RuntimeConfig.IPRanges) > 0 {
		field, raw = "runtimeConfig.ipRanges", n.RuntimeConfig.IPRanges
	}
	if len(raw) == 0 {
		return nil, configError("ipam.ranges", "no IP ranges specified")
	}
	sets := make([]RangeSet, len(raw))
	for i, rs := range raw {
		set, err := parseRangeSet(fmt.Sprintf("%s[%d]", field, i), rs)
		if err != nil {
			return nil, err
		}
		sets[i] = set
	}
	return sets, checkOverlaps(field, sets)
}

func parseRangeSet(field string, raw []rawRange) (RangeSet, error) {
	if len(raw) == 0 {
		return nil, configError(field, "empty range set")
	}
	set := make(RangeSet, len(raw))
	for i, rr := range raw {
		r, err := parseRange(fmt.Sprintf("%s[%d]", field, i), rr)
		if err != nil {
			return nil, err
		}
		if r.Subnet.Addr().Is4() != set[0].Subnet.Addr().Is4() && i > 0 {
			return nil, configError(field, "mixes IPv4 and IPv6 ranges")
		}
		set[i] = r
	}
	return set, nil
}

func checkOverlaps(field string, sets []RangeSet) error {
	var all []Range
	for _, s := range sets {
		all = append(all, s...)
	}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if all[i].overlaps(all[j]) {
				return configError(field, "range %s overlaps range %s", all[i], all[j])
			}
		}
	}
	return nil
}

// parseRequested gathers static addresses from every source host-local
// honours. Each must fall into a distinct range set; Add checks that.
func parseRequested(n *rawNet, cniArgs string) ([]netip.Addr, error) {
	var out []netip.Addr
	fromArgs, err := ipsFromCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	sources := []struct {
		field string
		ips   []string
	}{
		{"CNI_ARGS IP", fromArgs},
		{"args.cni.ips", n.Args.CNI.IPs},
		{"runtimeConfig.ips", n.RuntimeConfig.IPs},
	}
	for _, src := range sources {
		for _, s := range src.ips {
			ip, err := parseHostIP(s)
			if err != nil {
				return nil, configError(src.field, "%q: %s", s, err.Error())
			}
			for _, prev := range out {
				if prev == ip {
					return nil, configError(src.field, "%s requested twice", ip)
				}
			}
			out = append(out, ip)
		}
	}
	return out, nil
}

// ipsFromCNIArgs picks IP= out of CNI_ARGS ("K=V;K=V"); other keys belong
// to other plugins and are ignored. IP may list several addresses
// separated by commas (one per range set).
func ipsFromCNIArgs(args string) ([]string, error) {
	if args == "" {
		return nil, nil
	}
	var out []string
	for _, pair := range strings.Split(args, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, envError("CNI_ARGS", "%q is not KEY=VALUE", pair)
		}
		if k == "IP" {
			out = append(out, strings.Split(v, ",")...)
		}
	}
	return out, nil
}

// parseHostIP accepts "addr" or "addr/prefix" (the ips capability carries
// a prefix; the configured subnet decides the mask).
func parseHostIP(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr().Unmap(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zones are not allowed")
	}
	return ip.Unmap(), nil
}

// Subnets lists the subnet of every range, in order; none for a nil
// Config.
func (c *Config) Subnets() []*net.IPNet {
	if c == nil {
		return nil
	}
	var out []*net.IPNet
	for _, set := range c.RangeSets {
		for _, r := range set {
			p := r.Subnet.Masked()
			out = append(out, &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
		}
	}
	return out
}
