package reliability

import (
	"os"
	"testing"

	"github.com/nswire/nswire/pkg/testutil"
)

// binDir holds the nswire binary built for this run; it is also CNI_PATH.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithPlugins(m, func(bin, _ string) error {
		binDir = bin
		return nil
	}))
}
