// Package restore brings nswire's host state back after someone else
// removed it: a firewall reload (`nft flush ruleset`, an nftables or
// firewalld restart) takes nswire's tables, and with them every running
// container's published ports, masquerade, isolation and anti-spoofing; a
// `tc qdisc del` takes a container's shaping. Nothing in CNI calls the
// plugin again for running containers, so nswire-restore does.
//
// # One pass
//
// Restore is one idempotent pass, built like a runtime's view of the host:
//
//  1. Networks: every .conf, .conflist and .json of the CNI conf dir, each
//     plugin of type "nswire" in it, with the ipam dataDir its ADDs used
//     (networks.go).
//  2. Attachments: the intents (pkg/intent) ADD saved under that dataDir.
//     An intent counts only while its host veth exists and carries the
//     attachment's alias (one link dump for all). A container that died
//     without DEL took its veth with its namespace: its intent is left
//     alone, never resurrected (DEL or GC removes it).
//  3. Check, read-only and without a lock, stopping at the first
//     difference: the tables' skeleton (firewall.CheckTables), the network
//     records (firewall.Networks, which also rebuilds a table that is
//     missing, flushed or short of a chain or rule, as an ADD would), each
//     live network's network-level elements (firewall.CheckNetwork),
//     firewall.Check per attachment (on up to four sockets at once) and
//     the shaping.
//  4. Repair, only when the check found something: under the network
//     lock held exclusively (no ADD in flight: every live intent is its
//     last ADD's), intents and links are read and checked again, missing
//     records written (records.go), and each damaged attachment applied
//     again: firewall.Add for its own elements or its network's, shaping
//     for its qdiscs. After that the host veth is looked up again: a DEL
//     that started meanwhile (it deletes the veth first, then the firewall
//     elements, and takes no lock) may have removed the elements before
//     the Add put them back, so they are removed again.
//
// Attachments are applied in the order of their host veth's ifindex, the
// order the kernel made them in: a network whose settings changed while it
// had containers gets its newest ADD's network-level elements back, as
// before the loss. A check costs half an Add (300 attachments: 45 ms of
// firewall.Check against 80 ms of firewall.Add) and commits nothing, so an
// intact host is never written to.
//
// # Watch
//
// Watch runs a pass at start, then one after each loss it hears of, and a
// safety pass every Interval (5 minutes). It listens to the nftables
// notifications (NFNLGRP_NFTABLES) and to rtnetlink's tc and link groups.
// A transaction counts when it removed something (table, chain, rule,
// set, element) from a table named nswire of family inet or bridge and
// someone else committed it: the NFT_MSG_NEWGEN that ends each transaction
// names the committing task (NFTA_GEN_PROC_PID, a thread id, and
// NFTA_GEN_PROC_NAME, its comm). nswire's binaries ("nswire",
// "nswire-restore", "nswire-agent") and this process are ignored, except
// an nswire transaction that deleted a whole table: that is an ADD
// rebuilding a flushed or older table, which drops every attachment's
// elements. A tbf or ingress qdisc or a filter removed from one of
// nswire's links, or an ifb deleted while its veth lives, counts too (tc
// notifications do not say who; a shaping repair therefore costs one more,
// empty, pass). Passes are debounced: quiet for 20 ms, at most 100 ms after
// the first notification, so a reload of many transactions costs one.
package restore
