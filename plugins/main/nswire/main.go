// Command nswire is a CNI plugin that wires a container the way Docker's
// bridge network does: veth, bridge or host routes, IPAM, NAT and filters.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nswire/nswire/pkg/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.Funcs(),
		version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"nswire: Docker-style container networking for CNI")
}
