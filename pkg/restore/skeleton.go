package restore

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/firewall"
)

// firewall.Add and firewall.Networks rebuild a table whose layout stamp is
// gone (a deleted table, `nft flush table`), and firewall.Check sees a
// base chain missing; neither notices a chain of the layout emptied
// (`nft flush chain inet nswire forward`: no isolation, nothing
// reported). Every chain below holds rules in every layout (pkg/firewall
// doc.go), so one without rules was flushed or deleted. The table is
// then flushed whole, which takes its stamp rule, so that
// firewall.Networks rebuilds it, as it rebuilds after `nft flush table`.
var skeletonChains = []struct {
	family byte
	chains []string
}{
	{unix.NFPROTO_INET, []string{"raw-pre", "nat-pre", "nat-out", "ports", "forward", "nat-post"}},
	{unix.NFPROTO_BRIDGE, []string{"guard-pre", "forward"}},
}

// skeletonLoss names, per table family, a chain of the layout that holds
// no rule. A missing table has none either: call it once
// firewall.Networks has rebuilt missing tables.
func skeletonLoss(c *netlink.Conn) (map[byte]string, error) {
	out := map[byte]string{}
	for _, t := range skeletonChains {
		for _, ch := range t.chains {
			n, err := countRules(c, t.family, ch)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				out[t.family] = fmt.Sprintf("chain %s of table %s %s is empty or missing", ch, famName(t.family), firewall.TableName)
				break
			}
		}
	}
	return out, nil
}

// countRules dumps the rules of one chain of nswire's table of family
// fam (none when the chain or the table is missing).
func countRules(c *netlink.Conn, fam byte, chain string) (int, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, firewall.TableName)
	ae.String(unix.NFTA_RULE_CHAIN, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETRULE), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list rules of chain %s %s %s: %w", famName(fam), firewall.TableName, chain, err)
	}
	return len(msgs), nil
}

// flushTable removes every rule of nswire's table of family fam in one
// transaction; a missing table is fine.
func flushTable(c *netlink.Conn, fam byte) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, firewall.TableName)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	batch := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES} // res_id, big endian
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: batch},
		{Header: netlink.Header{Type: nftType(unix.NFT_MSG_DELRULE), Flags: netlink.Request | netlink.Acknowledge},
			Data: append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...)},
		{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: batch},
	}
	if _, err := c.SendMessages(msgs); err != nil {
		return err
	}
	_, err = c.Receive()
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("flush table %s %s: %w", famName(fam), firewall.TableName, err)
	}
	return nil
}

func nftType(msg uint16) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg)
}
