package shaping

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/link"
)

// An unknown tc kind names its modules and is marked as a missing kernel
// feature; other failures are not.
func TestTcError(t *testing.T) {
	err := tcError("tbf qdisc on nsw0", "sch_tbf", unix.ENOENT)
	if !errors.Is(err, link.ErrKernelFeature) || !strings.Contains(err.Error(), "modprobe -a sch_tbf") {
		t.Errorf("ENOENT: %v, want a missing feature naming sch_tbf", err)
	}
	err = tcError("tbf qdisc on nsw0", "sch_tbf", unix.ENOMEM)
	if errors.Is(err, link.ErrKernelFeature) || !errors.Is(err, unix.ENOMEM) || !strings.Contains(err.Error(), "nsw0") {
		t.Errorf("ENOMEM: %v, want it named and kept", err)
	}
}
