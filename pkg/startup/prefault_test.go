package startup

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// The advice must have succeeded: a range reaching past the mapped heap
// chunk fails with EINVAL (after populating only part of it).
func TestAdviceAccepted(t *testing.T) {
	if populateErr != 0 {
		t.Fatalf("MADV_POPULATE_WRITE: %v", populateErr)
	}
}

func TestPopulateRangeStaysInChunk(t *testing.T) {
	for _, c := range []struct{ anchor, base, size uintptr }{
		{0x7f0000400010, 0x7f0000400000, span},                            // chunk start
		{0x7f0000650000, 0x7f0000650000, 0x7f0000800000 - 0x7f0000650000}, // 1.7 MiB left
		{0x7f00007fffc0, 0x7f00007f0000, 0x10000},                         // last block
	} {
		base, size := populateRange(c.anchor)
		if base != c.base || size != c.size {
			t.Errorf("populateRange(%#x) = %#x+%#x, want %#x+%#x", c.anchor, base, size, c.base, c.size)
		}
	}
}

// The pages after the anchor must be resident once init ran: count them
// in /proc/self/smaps' Rss of the mapping holding the anchor.
func TestHeapPopulated(t *testing.T) {
	addr := uintptr(unsafe.Pointer(anchor))
	_, size := populateRange(addr)
	raw, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	var inMapping bool
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			lo, hi, _ := strings.Cut(f[0], "-")
			l, _ := strconv.ParseUint(lo, 16, 64)
			h, _ := strconv.ParseUint(hi, 16, 64)
			inMapping = uintptr(l) <= addr && addr < uintptr(h)
			continue
		}
		if inMapping && len(f) == 3 && f[0] == "Rss:" {
			kb, _ := strconv.Atoi(f[1])
			if kb < int(size>>10) {
				t.Fatalf("heap mapping holds %d KiB resident, want at least %d", kb, size>>10)
			}
			return
		}
	}
	t.Fatal("no mapping holds the anchor")
}
