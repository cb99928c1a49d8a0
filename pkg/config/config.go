// Package config loads and validates an nswire network configuration once,
// merging runtimeConfig, args and CNI_ARGS in one place so that the verb
// handlers only ever see a checked Net.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/nswire/nswire/pkg/ident"
)

// Modes of wiring the host end of the veth.
const (
	ModeBridge = "bridge"
	ModeRouted = "routed"
)

// DefaultBridge is the bridge used when the config names none.
const DefaultBridge = "nswire0"

// Net is one network configuration as nswire understands it.
type Net struct {
	types.PluginConf

	Mode        string `json:"mode"`
	Bridge      string `json:"bridge"`
	MTU         int    `json:"mtu"`
	HairpinMode *bool  `json:"hairpinMode"`
	IPMasq      *bool  `json:"ipMasq"`
	Isolation   *bool  `json:"isolation"`
	ICC         *bool  `json:"icc"`
	Internal    bool   `json:"internal"`
	// MACSpoofCheck pins the container's MAC in anti-spoofing; a chained
	// plugin that changes the MAC afterwards (tuning) needs it off.
	MACSpoofCheck *bool `json:"macSpoofCheck"`
	// NonMasqueradeCIDRs are destinations reached without masquerade (the
	// cluster's pod CIDR on a Kubernetes node).
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs"`
	LogFile            string   `json:"logFile"`
	LogLevel           string   `json:"logLevel"`

	// The per-container arguments are decoded apart from the network's
	// settings, by Load only: see LoadNetwork.
	RawRuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`
	RawArgs          json.RawMessage `json:"args,omitempty"`
	RuntimeConfig    RuntimeConfig   `json:"-"`
	Args             *Args           `json:"-"`

	// MAC is the container MAC requested through the mac capability,
	// args.cni.mac or CNI_ARGS MAC=, in that order of precedence.
	MAC net.HardwareAddr `json:"-"`
	// NoMasquerade is NonMasqueradeCIDRs parsed.
	NoMasquerade []*net.IPNet `json:"-"`
}

// RuntimeConfig holds the capability arguments nswire understands.
type RuntimeConfig struct {
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	Bandwidth    *Bandwidth    `json:"bandwidth,omitempty"`
	IPs          []string      `json:"ips,omitempty"`
	MAC          string        `json:"mac,omitempty"`
	DNS          *RuntimeDNS   `json:"dns,omitempty"`
}

// RuntimeDNS is the dns capability, whose field names differ from the
// config's dns section.
type RuntimeDNS struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// Args is the conventional "args" section of a network config.
type Args struct {
	CNI struct {
		IPs []string `json:"ips,omitempty"`
		MAC string   `json:"mac,omitempty"`
	} `json:"cni"`
}

// Bridged reports whether the host end is attached to a bridge.
func (n *Net) Bridged() bool { return n.Mode == ModeBridge }

// Masquerade reports whether outbound traffic is masqueraded.
func (n *Net) Masquerade() bool {
	if n.Internal {
		return false
	}
	if n.IPMasq != nil {
		return *n.IPMasq
	}
	return n.Bridged()
}

// Hairpin reports whether bridge ports reflect frames back to their
// sender, which a container needs to reach its own published port when
// br_netfilter makes the bridge see the DNATed packet. On by default.
func (n *Net) Hairpin() bool { return n.HairpinMode == nil || *n.HairpinMode }

// PinMAC reports whether anti-spoofing checks the container's MAC.
func (n *Net) PinMAC() bool { return n.MACSpoofCheck == nil || *n.MACSpoofCheck }

// Isolated reports whether other nswire networks are kept out.
func (n *Net) Isolated() bool { return n.Isolation == nil || *n.Isolation }

// InterContainer reports whether containers of this network may talk.
func (n *Net) InterContainer() bool { return n.ICC == nil || *n.ICC }

// Load parses stdin and CNI_ARGS into a validated Net for ADD and CHECK:
// the network's settings and the container's arguments (runtimeConfig,
// args, CNI_ARGS, prevResult). Every error is a *types.Error naming the
// offending field.
func Load(stdin []byte, cniArgs string) (*Net, error) {
	n, err := LoadNetwork(stdin)
	if err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&n.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "invalid prevResult", err.Error())
	}
	if err := decodeField("runtimeConfig", n.RawRuntimeConfig, &n.RuntimeConfig); err != nil {
		return nil, err
	}
	if err := decodeField("args", n.RawArgs, &n.Args); err != nil {
		return nil, err
	}
	if err := n.mergeMAC(cniArgs); err != nil {
		return nil, err
	}
	if err := n.validateCapabilities(); err != nil {
		return nil, err
	}
	return n, n.validateIPs()
}

// LoadNetwork parses and validates the network's own settings and leaves
// the container's arguments undecoded. DEL, GC and STATUS use it: they
// work from the attachment's identity, so an argument that ADD would
// refuse (a runtime may send the same ones to DEL) must not stop a
// teardown.
func LoadNetwork(stdin []byte) (*Net, error) {
	n := &Net{Mode: ModeBridge, Bridge: DefaultBridge}
	if err := decode(stdin, n); err != nil {
		return nil, err
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return n, nil
}

func decode(stdin []byte, n *Net) error {
	return decodeField("", stdin, n)
}

// decodeField decodes raw (a field of the config, "" for all of it) into v;
// an absent field leaves v alone.
func decodeField(field string, raw []byte, v any) error {
	if len(raw) == 0 {
		return nil
	}
	err := json.NewDecoder(bytes.NewReader(raw)).Decode(v)
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		name := typeErr.Field
		if field != "" {
			name = field + "." + name
		}
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("field %q: expected %s, got JSON %s", name, typeErr.Type, typeErr.Value), "")
	}
	if field != "" {
		return types.NewError(types.ErrDecodingFailure, field+" is not valid JSON", err.Error())
	}
	return types.NewError(types.ErrDecodingFailure, "network config is not valid JSON", err.Error())
}

// mergeMAC resolves the requested MAC once so later steps see one value.
func (n *Net) mergeMAC(cniArgs string) error {
	field, raw := "runtimeConfig.mac", n.RuntimeConfig.MAC
	if raw == "" && n.Args != nil && n.Args.CNI.MAC != "" {
		field, raw = "args.cni.mac", n.Args.CNI.MAC
	}
	if raw == "" {
		field, raw = "CNI_ARGS MAC", argValue(cniArgs, "MAC")
	}
	if raw == "" {
		return nil
	}
	mac, err := net.ParseMAC(raw)
	if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
		return invalid(field, "%q is not a unicast Ethernet MAC address", raw)
	}
	n.MAC = mac
	return nil
}

// argValue returns the value of key in a CNI_ARGS string (K=V;K=V).
func argValue(cniArgs, key string) string {
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == key {
			return v
		}
	}
	return ""
}

// Validate checks every setting of the network and cross-field rule.
func (n *Net) Validate() error {
	if err := ident.CheckNetworkName(n.Name); err != nil {
		return invalid("name", "%q is not a valid network name: %v", n.Name, err)
	}
	switch n.Mode {
	case ModeBridge:
		if err := ValidateIfName(n.Bridge); err != nil {
			return invalid("bridge", "%v", err)
		}
	case ModeRouted:
	default:
		return invalid("mode", "%q is not one of %q, %q", n.Mode, ModeBridge, ModeRouted)
	}
	if n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535) {
		return invalid("mtu", "%d is outside 68..65535", n.MTU)
	}
	if n.IPAM.Type == "" {
		return invalid("ipam.type", "is required")
	}
	if err := ValidateIfName(n.IPAM.Type); err != nil || strings.ContainsAny(n.IPAM.Type, "./") {
		return invalid("ipam.type", "%q is not a plugin name", n.IPAM.Type)
	}
	if _, ok := logLevels[n.LogLevel]; !ok {
		return invalid("logLevel", "%q is not one of debug, info, warn, error", n.LogLevel)
	}
	for i, c := range n.NonMasqueradeCIDRs {
		_, ipn, err := net.ParseCIDR(c)
		if err != nil {
			return invalid(fmt.Sprintf("nonMasqueradeCIDRs[%d]", i), "%q is not a CIDR", c)
		}
		n.NoMasquerade = append(n.NoMasquerade, ipn)
	}
	return nil
}

var logLevels = map[string]struct{}{"": {}, "debug": {}, "info": {}, "warn": {}, "error": {}}

func (n *Net) validateCapabilities() error {
	if err := validatePorts(n.RuntimeConfig.PortMappings); err != nil {
		return err
	}
	if b := n.RuntimeConfig.Bandwidth; b != nil {
		return b.validate()
	}
	return nil
}

func (n *Net) validateIPs() error {
	ips := n.RuntimeConfig.IPs
	field := "runtimeConfig.ips"
	if len(ips) == 0 && n.Args != nil {
		ips, field = n.Args.CNI.IPs, "args.cni.ips"
	}
	for _, s := range ips {
		if net.ParseIP(s) == nil {
			if _, _, err := net.ParseCIDR(s); err != nil {
				return invalid(field, "%q is not an IP address", s)
			}
		}
	}
	return nil
}

// ValidateIfName applies the kernel's rules for interface names.
func ValidateIfName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("interface name %q must have 1 to 15 characters", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("interface name %q is reserved", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("interface name %q contains %q", name, r)
		}
	}
	return nil
}

func invalid(field, format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, field+": "+fmt.Sprintf(format, a...), "")
}

// PortMapping is one entry of the portMappings capability, as the runtime
// sends it.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Proto is the protocol in lower case; "" means tcp, as in the portmap
// plugin.
func (p PortMapping) Proto() string {
	if p.Protocol == "" {
		return "tcp"
	}
	return strings.ToLower(p.Protocol)
}

// HostAddr is the host address to publish on: the zero Addr when the
// mapping names none (every address of each family), an unspecified
// address for every address of one family. Valid after Load.
func (p PortMapping) HostAddr() netip.Addr {
	a, _ := netip.ParseAddr(p.HostIP)
	return a.Unmap()
}

// Bandwidth is the bandwidth capability: rates in bits/s, bursts in bits.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

var protocols = map[string]bool{"tcp": true, "udp": true, "sctp": true}

// portClaim is what one mapping captures in one address family.
type portClaim struct {
	proto string
	port  int
	fam   int    // 4, 6
	ip    string // "" for every address of the family
}

// overlaps reports whether two claims capture the same packets: the same
// port when the addresses are equal or either side is a wildcard.
func (c portClaim) overlaps(o portClaim) bool {
	return c.proto == o.proto && c.port == o.port && c.fam == o.fam &&
		(c.ip == o.ip || c.ip == "" || o.ip == "")
}

// validatePorts checks the portMappings list before anything changes: port
// ranges, protocols, hostIP syntax and duplicates inside the list (two
// entries that would capture the same packets).
func validatePorts(ports []PortMapping) error {
	seen := map[portClaim]int{}
	for i, p := range ports {
		field := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		claims, err := p.claims(field)
		if err != nil {
			return err
		}
		for _, c := range claims {
			for o, j := range seen {
				if c.overlaps(o) {
					return invalidf("%s: hostPort %d/%s overlaps portMappings[%d]", field, p.HostPort, c.proto, j)
				}
			}
			seen[c] = i
		}
	}
	return nil
}

// claims checks one mapping and lists what it captures.
func (p PortMapping) claims(field string) ([]portClaim, error) {
	if p.HostPort < 1 || p.HostPort > 65535 {
		return nil, invalidf("%s.hostPort %d is out of range 1-65535", field, p.HostPort)
	}
	if p.ContainerPort < 1 || p.ContainerPort > 65535 {
		return nil, invalidf("%s.containerPort %d is out of range 1-65535", field, p.ContainerPort)
	}
	if !protocols[p.Proto()] {
		return nil, invalidf("%s.protocol %q is not one of tcp, udp, sctp", field, p.Protocol)
	}
	if p.HostIP == "" {
		return []portClaim{{p.Proto(), p.HostPort, 4, ""}, {p.Proto(), p.HostPort, 6, ""}}, nil
	}
	ip := net.ParseIP(p.HostIP)
	if ip == nil {
		return nil, invalidf("%s.hostIP %q is not an IP address", field, p.HostIP)
	}
	if ip.IsMulticast() || ip.Equal(net.IPv4bcast) {
		return nil, invalidf("%s.hostIP %q is not a unicast address", field, p.HostIP)
	}
	c := portClaim{p.Proto(), p.HostPort, 6, ""}
	if ip.To4() != nil {
		c.fam = 4
	}
	if !ip.IsUnspecified() {
		c.ip = ip.String()
	}
	return []portClaim{c}, nil
}

// validate checks the limits before anything changes.
func (b Bandwidth) validate() error {
	if err := validateRate("ingress", b.IngressRate, b.IngressBurst); err != nil {
		return err
	}
	return validateRate("egress", b.EgressRate, b.EgressBurst)
}

func validateRate(dir string, rate, burst uint64) error {
	const f = "runtimeConfig.bandwidth."
	switch {
	case rate == 0 && burst == 0:
		return nil
	case rate == 0:
		return invalidf(f+"%sBurst is set but bandwidth.%sRate is not", dir, dir)
	case burst == 0:
		return invalidf(f+"%sRate is set but bandwidth.%sBurst is not", dir, dir)
	case rate < 8:
		return invalidf(f+"%sRate %d bits/s is below the minimum of 8", dir, rate)
	case burst < 8:
		return invalidf(f+"%sBurst %d bits is below the minimum of 8", dir, burst)
	case burst/8 >= math.MaxUint32:
		return invalidf(f+"%sBurst %d bits exceeds 4 GiB", dir, burst)
	}
	return nil
}

// invalidf is an invalid-configuration error whose message names the
// field itself.
func invalidf(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}
