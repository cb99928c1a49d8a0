// Package ident derives short, stable names from identities (network,
// container ID, interface): host veth, ifb, nftables chains, IPAM index
// files. A name must be the same in every process and spread well; it is
// not a security boundary (the runtime, not the container, picks the IDs),
// so a 128-bit FNV-1a with a final mix serves, and keeps crypto/sha256 and
// the FIPS module's start-up work out of a binary that starts for every CNI
// verb.
package ident

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
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
	var raw [16]byte
	h.Sum(raw[:0])
	// FNV's top bits hardly depend on the last bytes (names differing in a
	// final character share their leading digits), and names use the
	// leading digits: mix both halves through murmur3's finalizer.
	hi, lo := binary.BigEndian.Uint64(raw[:8]), binary.BigEndian.Uint64(raw[8:])
	lo = fmix64(lo ^ hi)
	hi = fmix64(hi ^ lo)
	var out [16]byte
	binary.BigEndian.PutUint64(out[:8], hi)
	binary.BigEndian.PutUint64(out[8:], lo)
	return out
}

func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// Hex is the first n hex digits (n ≤ 32) of Sum(parts...).
func Hex(n int, parts ...string) string {
	sum := Sum(parts...)
	return hex.EncodeToString(sum[:])[:n]
}

// MaxNetworkName bounds a network name: it becomes a path element (IPAM),
// part of a host veth's ifalias (255 bytes, with a container ID) and of
// nftables comments (at most 256 bytes).
const MaxNetworkName = 100

// CheckNetworkName applies the grammar of CheckName and MaxNetworkName.
// Both plugins validate names with it, so a name one accepts the other
// does too.
func CheckNetworkName(name string) error { return CheckName(name, MaxNetworkName) }

// CheckName applies the CNI spec's grammar for network names,
// [a-zA-Z0-9][a-zA-Z0-9_.-]*, which rules out "..", "/" and control
// characters (the name is safe as a file name), and a length limit.
func CheckName(s string, max int) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	for i, c := range []byte(s) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '-' || c == '_' || c == '.') {
			continue
		}
		return errors.New("must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
	}
	return nil
}

// Attachment is one container interface on one network: the identity every
// per-attachment name nswire derives (host veth, its marker, nftables
// chains and element comments, intent files) starts from.
type Attachment struct {
	Network, ContainerID, IfName string
}

// String is "network/containerID/ifname", the form markers and element
// comments carry. None of the three contains a '/': the network name by
// CheckNetworkName, the others by the CNI spec (skel checks them).
func (a Attachment) String() string {
	return a.Network + "/" + a.ContainerID + "/" + a.IfName
}

// ParseAttachment reads String's form.
func ParseAttachment(s string) (Attachment, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return Attachment{}, false
	}
	return Attachment{Network: parts[0], ContainerID: parts[1], IfName: parts[2]}, true
}

// Hex is the first n hex digits of the identity's hash.
func (a Attachment) Hex(n int) string { return Hex(n, a.Network, a.ContainerID, a.IfName) }
