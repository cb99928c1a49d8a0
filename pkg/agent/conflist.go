package agent

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/netip"
)

// ConflistName is the file the agent owns in the CNI conf dir. Runtimes
// take the first file in lexical order, so anything sorting before it wins.
const ConflistName = "10-nswire.conflist"

// cniVersion is the newest version containerd 1.6/1.7's libcni accepts.
const cniVersion = "1.0.0"

type conflist struct {
	CNIVersion string   `json:"cniVersion"`
	Name       string   `json:"name"`
	Plugins    []plugin `json:"plugins"`
}

type plugin struct {
	Type               string          `json:"type"`
	Bridge             string          `json:"bridge"`
	IPMasq             bool            `json:"ipMasq"`
	NonMasqueradeCIDRs []string        `json:"nonMasqueradeCIDRs"`
	HairpinMode        bool            `json:"hairpinMode"`
	Capabilities       map[string]bool `json:"capabilities"`
	IPAM               ipamConf        `json:"ipam"`
}

type ipamConf struct {
	Type    string        `json:"type"`
	DataDir string        `json:"dataDir,omitempty"`
	Ranges  [][]ipamRange `json:"ranges"`
	Routes  []ipamRoute   `json:"routes"`
}

type ipamRange struct {
	Subnet string `json:"subnet"`
}

type ipamRoute struct {
	Dst string `json:"dst"`
}

// Network is what the node's conflist holds besides its pod CIDRs.
type Network struct {
	ClusterCIDRs []netip.Prefix // reached without masquerade
	Bridge       string         // "" means nswire's default, nswire0
	IPAMDataDir  string         // "" means nswire-ipam's default, /var/lib/cni/networks
}

// RenderConflist renders the node's network: one IPAM range set per pod
// CIDR, a default route per family present, and the cluster CIDRs exempt
// from masquerade so pods reach pods on other nodes with their own
// addresses. The output is deterministic, so equal inputs give equal bytes.
func RenderConflist(podCIDRs []netip.Prefix, nw Network) ([]byte, error) {
	if len(podCIDRs) == 0 {
		return nil, errors.New("no pod CIDR")
	}
	p := plugin{
		Type: "nswire", Bridge: cmp.Or(nw.Bridge, "nswire0"), IPMasq: true, HairpinMode: true,
		NonMasqueradeCIDRs: prefixStrings(nw.ClusterCIDRs),
		Capabilities:       map[string]bool{"portMappings": true, "bandwidth": true},
		IPAM:               ipamConf{Type: "nswire-ipam", DataDir: nw.IPAMDataDir},
	}
	var v4, v6 bool
	for _, c := range podCIDRs {
		p.IPAM.Ranges = append(p.IPAM.Ranges, []ipamRange{{Subnet: c.Masked().String()}})
		v4, v6 = v4 || c.Addr().Is4(), v6 || !c.Addr().Is4()
	}
	if v4 {
		p.IPAM.Routes = append(p.IPAM.Routes, ipamRoute{Dst: "0.0.0.0/0"})
	}
	if v6 {
		p.IPAM.Routes = append(p.IPAM.Routes, ipamRoute{Dst: "::/0"})
	}
	out, err := json.MarshalIndent(conflist{CNIVersion: cniVersion, Name: "nswire", Plugins: []plugin{p}}, "", "  ")
	return append(out, '\n'), err
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked().String())
	}
	return out
}
