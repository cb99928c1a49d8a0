// Package ipam is nswire's IPAM. It reads host-local's configuration and
// on-disk layout, adds an index so ADD, DEL and CHECK cost O(1) in the number
// of reservations, and orders its writes so a crash or power loss at any
// instant never hands one address to two attachments.
//
// # Addresses
//
// One address per range set. Never handed out: the network address (for
// IPv6 the subnet-router anycast address), the IPv4 broadcast address and
// every range's gateway. Small subnets:
//
//   - /31 and /127 are point-to-point links (RFC 3021, RFC 6164): no
//     network or broadcast address; the gateway defaults to the lower
//     address, so the container gets the upper one (or the lower one when
//     the gateway is set to the upper one).
//   - /32 and /128 hold a single address that goes to the container; there
//     is no gateway, and configuring one is an error.
//   - rangeStart/rangeEnd on a network or broadcast address are accepted (as
//     host-local does) and narrowed to the host addresses; a range left with
//     nothing to allocate is an error.
//
// Allocation continues after the range set's last_reserved_ip, so a freed
// address is reused only after the set wrapped around.
//
// # Store
//
// dataDir/<network> keeps host-local's files (lock, one file per address
// holding "containerID\r\nifname", last_reserved_ip.<set>) and adds
// .nswire/, holding one index file per attachment, named by a hash of
// (containerID, ifname), listing its addresses. All writers hold flock on
// the lock file, the same lock host-local takes.
//
// The address files are the authority. ADD writes the new index entry and
// each address file to scratch files in .nswire/, renames the index entry
// into place, and only then renames each address file into place (without
// replace). So an address file appears only once its index entry is in
// place: every address file is reachable from its owner's index at every
// instant, whenever the writer is killed. DEL removes address files before
// the index entry. The only possible leftovers are an index entry pointing
// at a missing or foreign file, which lookups ignore and the next write
// cleans, and scratch files, which the next writer unlinks.
//
// Nothing is fsynced. A killed process loses nothing (its writes are in
// the page cache); a machine crash may leave recent files missing, empty
// or torn, but it also ends every container that held a reservation. So
// .nswire/version names the boot in which the index was last checked, and
// the first use in a new boot rebuilds the index from the address files
// (one walk per boot) and settles unreadable ones as GC does, keeping every
// readable reservation: a container restarted with the same ID and
// interface gets its address back, as with host-local. Four fsyncs per ADD
// cost about 1.5 ms here and bought nothing the rebuild does not.
//
// A directory without .nswire/version (written by host-local) is indexed
// once, under the lock, on first use, releasing nothing: which boot its
// files are from is unknown.
//
// Corruption: an index file carries its attachment and a CRC; a bad one is
// rebuilt from the address files (a walk, only then). An unreadable address
// file stays reserved (its owner might be live); ADD and CHECK of the
// attachment pointing at it fail with a clear error, and GC settles it: the
// one valid attachment claiming it gets it back, no claimant removes it.
//
// Not covered: legacy host-local files holding only a container ID are not
// indexed (no ifname); GC keeps them while the container is valid. Going
// back to host-local and then forward again needs .nswire removed, as
// host-local does not maintain the index.
package ipam
