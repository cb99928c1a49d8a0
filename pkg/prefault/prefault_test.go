package prefault

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// The pages after the anchor must be resident once init ran: count them
// in /proc/self/smaps' Rss of the mapping holding the anchor.
func TestHeapPopulated(t *testing.T) {
	addr := uintptr(unsafe.Pointer(anchor))
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
			if kb < span>>10 {
				t.Fatalf("heap mapping holds %d KiB resident, want at least %d", kb, span>>10)
			}
			return
		}
	}
	t.Fatal("no mapping holds the anchor")
}
