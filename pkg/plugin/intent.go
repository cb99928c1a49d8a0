package plugin

import (
	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/ipam"
)

// intentDir is where the network's intent files live: beside the
// reservations of its host-local style ipam section, or under host-local's
// default dataDir when the IPAM reads another format.
func intentDir(n *config.Net, cfg *ipam.Config) string {
	dataDir := ipam.DefaultDataDir
	if cfg != nil {
		dataDir = cfg.DataDir
	}
	return intent.Dir(dataDir, n.Name)
}
