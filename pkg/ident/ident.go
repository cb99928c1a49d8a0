// Package ident derives short, stable names from identities (network,
// container ID, interface): host veth, ifb, nftables chains, IPAM index
// files. A name must be the same in every process and spread well; it is
// not a security boundary (the runtime, not the container, picks the IDs),
// so a 128-bit FNV-1a serves, and keeps crypto/sha256 and the FIPS module's
// start-up work out of a binary that starts for every CNI verb.
package ident

import (
	"encoding/hex"
	"hash/fnv"
)

// Sum hashes the parts joined by NUL, so ("ab", "c") and ("a", "bc")
// differ.
func Sum(parts ...string) [16]byte {
	h := fnv.New128a()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	var out [16]byte
	h.Sum(out[:0])
	return out
}

// Hex is the first n hex digits (n ≤ 32) of Sum(parts...).
func Hex(n int, parts ...string) string {
	sum := Sum(parts...)
	return hex.EncodeToString(sum[:])[:n]
}
