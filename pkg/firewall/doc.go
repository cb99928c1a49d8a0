// Package firewall is nswire's packet filtering and NAT: two nftables tables
// named "nswire" (family inet and family bridge), driven over netlink with
// github.com/google/nftables. Nothing is exec'd, and every operation acts
// in the network namespace given to New.
//
// # Layout
//
// table inet nswire
//
//	chain raw-pre   filter  prerouting  -300  iifname != "lo" ip daddr 127.0.0.0/8 drop   (CVE-2020-8558)
//	                                          anti-spoofing rules (routed mode, see below)
//	chain nat-pre   nat     prerouting  -100  fib daddr type local goto ports
//	chain nat-out   nat     output      -100  fib daddr type local goto ports
//	chain ports     (regular)                 dnat ip to ip daddr . l4proto . th dport map @dnat4
//	                                          dnat ip to l4proto . th dport map @dnat4any
//	                                          (same for ip6 with @dnat6, @dnat6any)
//	chain forward   filter  forward     -10   ct status dnat accept
//	                                          saddr . daddr @noicc drop
//	                                          saddr . daddr @intra accept
//	                                          saddr @internal drop; daddr @internal drop
//	                                          saddr @iso daddr @nets drop; daddr @iso saddr @nets drop
//	chain nat-post  nat     postrouting 100   ct status dnat ip saddr 127.0.0.0/8 ip daddr @nets4 masquerade
//	                                          ct status dnat saddr . daddr @intra masquerade   (hairpin)
//	                                          saddr @masq saddr . daddr != @intra masquerade    (ipMasq)
//	chain a-<net8>-<att16>                    per attachment: published ports record
//	chain g-<net8>-<att16>                    per attachment (routed mode): anti-spoofing record
//	chain networks                            the networks of this host: subnets owned, bridge,
//	                                          settings (claims.go)
//	chain layout-2                            the layout stamp (see Layout version)
//
// table bridge nswire
//
//	chain guard-pre filter  prerouting  -300  anti-spoofing rules (bridge mode):
//	                                          iifname != @guarded return
//	                                          iifname != @nomac iifname . ether saddr != @gmac drop
//	                                          arp: the same for the sender MAC; sender IP 0.0.0.0
//	                                               or iifname . arp saddr ip @gip4 return
//	                                          ip: iifname . ip saddr @gip4 return
//	                                          ip6: saddr :: return; iifname . ip6 saddr @gip6 return;
//	                                               iifname @nomac ip6 saddr fe80::/10 return
//	                                          drop
//	chain forward   filter  forward     -200  iifname @noicc meta pkttype != host drop
//	chain g-<net8>-<att16>                    per attachment: anti-spoofing record
//	chain layout-2                            the layout stamp
//
// Sets and maps (4 and 6 stand for one per address family):
//
//	dnat4/6       addr . proto . port : ctr addr . port   published on one host address
//	dnat4/6any    proto . port : ctr addr . port          published on every host address
//	guarded       ifname                          host veths under anti-spoofing (both tables)
//	gmac          ifname . ether_addr             the MAC each may send from
//	gip4/6        ifname . address                the addresses each may send from
//	nomac         ifname                          host veths whose MAC is not checked
//	noicc         ifname                          bridge: host veths of attachments with icc=false
//	nets4/6       interval                        subnets of every nswire network
//	iso4/6        interval                        subnets of networks with isolation
//	masq4/6       interval                        subnets with ipMasq and not internal
//	internal4/6   interval                        subnets of internal networks
//	intra4/6      interval addr . addr            subnet pairs within one network
//	noicc4/6      interval addr . addr            subnet pairs of networks with icc=false
//
// # Per-attachment state and O(1) ADD/DEL
//
// An attachment is identified by (network, containerID, ifname). Its
// objects are named from that identity alone: the chains a-<net8>-<att16>
// and g-<net8>-<att16> (8 hex digits of a hash of the network, 16 of a hash
// of (network, containerID, ifname); see pkg/ident). Each DNAT map element
// carries the identity as its comment, and is added with NLM_F_EXCL: the
// kernel refuses a key that is held, even with an equal datum (two
// attachments in networks with overlapping subnets may translate to the
// same address and port). An element is the attachment's when its datum
// matches the record and its comment names the attachment. The
// anti-spoofing elements are keyed by the host veth's name first (itself
// derived from the identity), so each belongs to one attachment.
//
// The chains are the attachment's record, made of rules without
// expressions (nothing jumps to them, and a commit never validates them).
// Each a- rule's comment is "nswire port <proto> <hostIP>:<hostPort> ->
// <ip>:<port>", which gives the key and datum of one DNAT map element. The
// g- chain holds
// rules without expressions whose comments are "nswire guard <hostVeth>
// <identity>", "mac <mac>" or "nomac", and "ip <addr>" per address: the
// keys of its guard set elements. Nothing jumps to a g- chain. So DEL,
// knowing only the identity:
//
//  1. asks the kernel for the three chains by name (targeted GETs: the
//     kernel looks them up in its per-table hash) and, in the same round,
//     for the a- chain's rules,
//  2. GETs each recorded port element by key and keeps it if its datum is
//     still the attachment's (never deleting another attachment's
//     element), and reads the g- chain's rules,
//  3. deletes those elements, the guard elements and the chains in one
//     transaction. Each guard element is added, then deleted: the pair
//     commits whether or not the element was there, so no GET per element
//     is needed and a DEL that ran half before converges.
//
// ADD reads the same state (to replace a previous ADD of the same identity)
// and, in the same first round, GETs each network-level interval by its
// start (an interval set answers with the interval holding the key, so
// only an exact match counts). It writes one transaction: the network-level
// elements that are not as the network's flags want (re-added, which is a
// no-op when present, or added-then-deleted when a flag is off; usually
// none), the a- chain with its rules and port elements, the g- chain and
// the guard elements. Neither ever lists a whole set, chain list or ruleset; the work
// is proportional to the attachment's own ports and addresses whatever the
// number of containers. The kernel serialises transactions, so concurrent
// ADDs from different processes need no lock: nothing is cached, and what
// two of them race to create is either created exclusively (the tables,
// the DNAT elements) or added and flushed in the same transaction (the
// record chains), so it never ends up doubled.
// GC is the one verb that lists: it lists chains of the two tables, picks
// a-/g- chains with the network's tag whose attachment tag is not valid,
// and deletes each such attachment as DEL does. It then lists the set
// guarded: an element of the network whose owner (its comment) is not
// valid lost its record chain to someone else, and its port's guard
// elements are found by listing the guard sets. (DEL in that case lists
// them too, by the host veth name it is given.)
//
// # Netlink traffic
//
// The kernel handles a netfilter netlink request inside the sendmsg that
// carries it, so nswire pipelines: the independent GETs of one step go in
// one sendmsg (at most one dump each, a second one would get EBUSY) and
// each reply takes one recvmsg. The transactions of ADD, DEL and GC are
// built by nswire (txn.go: elements, record chains and their rules
// without expressions, each message with its own flags) and sent with a
// single acknowledgement requested, on the last message (failures of any
// message and of the commit are reported before it). Only the creation of
// the tables goes through google/nftables. A fresh ADD is one round of GETs, plus
// one dump of dnat4 and of dnat6 when a port is published on every host
// address (see Port conflicts), and one transaction; a DEL is two rounds
// and one transaction.
//
// An ADD or DEL commits only set and map elements without verdicts and
// rules without expressions, which the kernel does not validate: the cost
// of a commit does not grow with the number of attachments. (A commit
// that adds a jump or goto validates the jump graph of its table through
// every map into every chain: with a verdict map jumping to a chain per
// attachment, at 980 attachments such a commit took 2.5-3.4 ms in the
// kernel for anti-spoofing, 1.4-1.8 ms for a DNAT chain.)
//
// # Layout version
//
// Each table carries the layout version (layoutVersion, layout.go) as the
// name of a regular chain, layout-<version>, that holds one rule without
// expressions (comment "nswire layout <version>"); nothing jumps to it.
// ADD's first round GETs both tables (their handles), both stamp chains
// and the chains of each table's skeleton (their use counts: a chain's
// rules plus the jumps and gotos to it; skeleton.go's skeletonUse). A
// table that is missing, has no stamp chain of this version, whose stamp
// chain lost its rule (`nft flush table`), or one of whose skeleton chains
// is missing or has a smaller use count than the layout gives it (`nft
// flush chain inet nswire forward`, a rule deleted) is not current, and is
// rebuilt before the ADD (or Networks) goes on: deleted and created again
// with its sets, base chains and stamp, in two transactions that each
// fail when another process rebuilt first. The delete names the table by
// the handle the probe saw (the kernel never reuses a handle, so a table
// someone rebuilt meanwhile is not deleted again), and the creation is
// exclusive. The ADD then reads again. Only nswire's two tables are
// touched, and only ADD rebuilds: DEL, CHECK and GC never create a table.
// CHECK (and CheckTables) report a table that is not current as a
// *Mismatch; CheckNetwork reads a network's network-level elements with
// ADD's own probes and reports the first one missing or unwanted.
// Elements of a rebuilt table are gone; an attachment made before gets
// them back at its next ADD, and its DEL succeeds without them.
//
// # Port conflicts
//
// A published key is one map element, so a second attachment asking for
// the same (proto, hostIP, hostPort) makes the kernel reject the whole
// transaction (EEXIST: the key is held). Overlaps between a
// specific hostIP and the wildcard are asserted in the same transaction:
// the overlapping key is added with the attachment's own datum and
// deleted again, which fails only if someone else holds it. For a wildcard
// mapping the specific keys checked are the addresses that address-specific
// mappings use (read from dnat4 and dnat6, one element per such mapping). On
// failure, targeted GETs find which key is held and by whom for the error
// message; nothing was changed.
//
// # Behaviour notes
//
//   - Published ports capture only traffic addressed to the host (fib daddr
//     type local), from outside (prerouting) and from the host itself
//     (output), 127.0.0.1 included. Localhost DNAT needs
//     net.ipv4.conf.<bridge>.route_localnet=1 (set by pkg/link, not here);
//     such connections are masqueraded to the bridge address, and packets
//     to 127.0.0.0/8 from any interface but lo are dropped before conntrack.
//     There is no IPv6 equivalent: [::1] is not DNATed to containers.
//   - Hairpin (a container reaching a published port, its own included) is
//     masqueraded when source and destination are in one network. When
//     br_netfilter is loaded the bridge port needs hairpin_mode for the
//     own-port case (the translated packet is bridged back out of the port
//     it came in on).
//   - icc=false is enforced in the bridge family (frames bridged between
//     ports, no br_netfilter needed) and, for routed or br_netfilter
//     traffic, in inet forward. It is applied per attachment at ADD.
//   - Anti-spoofing: frames from a container's port must carry its MAC (unless
//     macSpoofCheck is off: the port is then in @nomac), IPv4
//     and ARP must use one of its IPv4 addresses (ARP also 0.0.0.0, and the
//     ARP sender MAC must be its MAC), IPv6 one of its addresses, the
//     EUI-64 link-local address of its MAC, or :: (DAD, MLD). Everything
//     else, VLAN-tagged frames included, is dropped. In routed mode the
//     same is enforced in inet prerouting (ARP is not seen there).
//   - UDP conntrack entries for a published UDP port are deleted when the
//     port is published or removed.
//
// # Coexistence and priorities
//
// nswire's base chains sit beside other tables (iptables-nft from Docker
// or kube-proxy, kube-proxy's nftables tables) and never touch them:
//
//   - raw-pre at -300 (raw): spoofed packets and 127/8 martians are gone
//     before conntrack (-200) creates entries for them.
//   - nat-pre/nat-out at -100 (dstnat), nat-post at 100 (srcnat): the
//     standard NAT priorities; the first NAT chain that binds a mapping
//     wins, and nswire only matches its own ports and subnets.
//   - forward at -10: just before the iptables filter FORWARD chain (0). It
//     only drops; an accept in one base chain does not bypass another, so
//     a host whose FORWARD policy is DROP (Docker sets one) must allow
//     nswire's bridges itself (e.g. in DOCKER-USER).
//   - bridge guard-pre at -300 and forward at -200 (filter): before
//     br_netfilter (0), so spoofed frames never reach the inet hooks.
package firewall
