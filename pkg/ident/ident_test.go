package ident

import (
	"fmt"
	"testing"
)

// Names derived from identities are written into the kernel and onto disk
// by one process and looked up by another, possibly of a later version:
// they must never change.
func TestStable(t *testing.T) {
	if got := Hex(32, "net", "ctr", "eth0"); got != Hex(32, "net", "ctr", "eth0") || len(got) != 32 {
		t.Fatalf("Hex not deterministic or wrong length: %q", got)
	}
	if Hex(16, "ab", "c") == Hex(16, "a", "bc") {
		t.Errorf("parts are not separated")
	}
	if got, want := Hex(12, "nswire"), "4f99e441e2b9"; got != want {
		t.Errorf("Hex(12, nswire) = %s, want %s (a change renames every existing link)", got, want)
	}
}

// Names are prefixes of the hash: identities that differ in one trailing
// character (ctr1, ctr2, ...) must not share them.
func TestPrefixesSpread(t *testing.T) {
	seen := map[string]string{}
	for i := range 3000 {
		id := fmt.Sprintf("net%d", i)
		p := Hex(8, id)
		if other, dup := seen[p]; dup {
			t.Fatalf("%s and %s share the 8-digit prefix %s", id, other, p)
		}
		seen[p] = id
	}
}

func TestAttachmentString(t *testing.T) {
	a := Attachment{Network: "net-1", ContainerID: "c0ffee", IfName: "eth0"}
	if got, ok := ParseAttachment(a.String()); !ok || got != a {
		t.Errorf("ParseAttachment(%q) = %v, %v", a.String(), got, ok)
	}
	for _, bad := range []string{"", "a/b", "a/b/c/d", "/b/c", "a//c"} {
		if _, ok := ParseAttachment(bad); ok {
			t.Errorf("ParseAttachment(%q) accepted", bad)
		}
	}
}
