package restore

import (
	"errors"

	"github.com/nswire/nswire/pkg/firewall"
)

// netDamage returns, per network of the live attachments, why its
// network-level elements (masquerade, isolation, intra-network pairs,
// which firewall.Check does not look at) are not as its newest ADD left
// them: firewall.CheckNetwork, the elements firewall.Add asserts. live is
// in creation order, so a network whose settings changed while it had
// containers is checked against its newest ADD's.
func netDamage(fw *firewall.Firewall, live []*attachment) (map[string]string, error) {
	newest := map[string]firewall.Network{}
	var order []string
	for _, a := range live {
		if _, ok := newest[a.in.Network]; !ok {
			order = append(order, a.in.Network)
		}
		newest[a.in.Network] = a.fw.Net
	}
	damaged := map[string]string{}
	for _, name := range order {
		err := fw.CheckNetwork(newest[name])
		if errors.As(err, new(*firewall.Mismatch)) {
			damaged[name] = err.Error()
		} else if err != nil {
			return nil, err
		}
	}
	return damaged, nil
}
