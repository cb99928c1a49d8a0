// Package reliability holds nswire's reliability and security suites, run
// by `go test ./...` as root against the built plugin binary:
//
//   - crash_test.go: SIGKILL the plugin at random instants (and at the
//     instant its links appear) during ADD, DEL and GC on a network with
//     live containers, run the runtime's usual recovery (DEL, retried ADD,
//     or GC with the live list), and prove the host holds exactly the live
//     attachments and that they still work. NSWIRE_CRASHES=n for more.
//   - soak_test.go: random ADD/DEL/CHECK/GC from 8 concurrent callers over
//     three networks (IPv4, IPv6 routed, dual-stack) with invariants
//     checked throughout. NSWIRE_SOAK_OPS=n for a longer run.
//   - hostchange_test.go: an admin deletes or downs the bridge, flushes or
//     deletes the nftables table, removes the IPAM directory; the dataDir
//     is read-only or full.
//   - security_test.go: hostile names, file modes, foreign links.
//
// Every test runs inside its own throwaway "host" network namespace
// (pkg/testutil), so nothing touches the machine's network.
package reliability
