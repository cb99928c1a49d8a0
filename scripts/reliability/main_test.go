package reliability

import (
	"fmt"
	"os"
	"testing"

	"github.com/nswire/nswire/pkg/testutil"
)

// binDir holds the nswire binary built for this run; it is also CNI_PATH.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("reliability: skipped, needs root (namespaces, links, nftables, mounts)")
		return 0
	}
	dir, err := os.MkdirTemp("", "nswire-rel-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := testutil.BuildPlugins(dir, "plugins/main/nswire"); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}
