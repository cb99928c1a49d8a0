package plugin

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/intent"
	"github.com/nswire/nswire/pkg/ipam"
)

// intentDir is where the network's intent files live: beside the
// reservations of its ipam section's dataDir (host-local's default when
// unset or unreadable). cfg is the section when the caller parsed it.
func intentDir(n *config.Net, cfg *ipam.Config, stdin []byte) string {
	if cfg != nil {
		return intent.Dir(cfg.DataDir, n.Name)
	}
	dataDir, err := ipam.DataDir(stdin)
	if err != nil {
		dataDir = ipam.DefaultDataDir
	}
	return intent.Dir(dataDir, n.Name)
}

// removeIntent is DEL's part: the attachment's intent file goes with it.
func removeIntent(n *config.Net, args *skel.CmdArgs) error {
	return intent.Remove(intentDir(n, nil, args.StdinData), attachment(n, args))
}

// pruneIntents is GC's part: intents of attachments not in valid go.
func pruneIntents(n *config.Net, stdin []byte, valid map[ident.Attachment]bool) error {
	return intent.Prune(intentDir(n, nil, stdin), func(id ident.Attachment) bool { return valid[id] })
}
