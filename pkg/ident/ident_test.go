package ident

import "testing"

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
	if got, want := Hex(12, "nswire"), "65e907a1593c"; got != want {
		t.Errorf("Hex(12, nswire) = %s, want %s (a change renames every existing link)", got, want)
	}
}
