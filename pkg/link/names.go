package link

import (
	"strings"

	"github.com/nswire/nswire/pkg/ident"
)

// HostVethPrefix starts the name of every host-side veth nswire creates.
const HostVethPrefix = "nsw"

// HostVethName derives the host end's name from the attachment identity, so
// DEL and GC find it without state. 12 hex digits keep collisions out of
// reach (2^48) within the kernel's 15-character limit.
func HostVethName(a ident.Attachment) string {
	return HostVethPrefix + a.Hex(12)
}

// OwnerGroup is the device group (IFLA_GROUP) nswire creates its links
// in: set in the creating RTM_NEWLINK itself, it marks a link that a
// killed ADD left before its alias was written. The name (derived from
// the identity) plus this group identify such a half-made link.
const OwnerGroup uint32 = 0x6e737700 // "nsw\0"

// aliasPrefix marks links nswire owns; DEL and GC touch nothing without it.
const aliasPrefix = "nswire/"

// Alias is the marker stored as the host veth's ifalias.
func Alias(a ident.Attachment) string {
	return aliasPrefix + a.String()
}

// ParseAlias reads a marker; ok is false for links nswire does not own.
func ParseAlias(alias string) (ident.Attachment, bool) {
	rest, found := strings.CutPrefix(alias, aliasPrefix)
	if !found {
		return ident.Attachment{}, false
	}
	return ident.ParseAttachment(rest)
}
