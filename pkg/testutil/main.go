package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RunWithPlugins is the body of a TestMain for tests that drive the plugin
// binaries. Without root it runs nothing (namespaces, links and nftables
// need it). Otherwise it builds nswire and nswire-ipam into a temporary
// directory, installs the reference plugins if missing, hands both
// directories to setup and runs the tests.
func RunWithPlugins(m *testing.M, setup func(bin, ref string) error) int {
	if os.Geteuid() != 0 {
		fmt.Println("skipped: these tests need root (network namespaces, links, nftables)")
		return 0
	}
	dir, err := os.MkdirTemp("", "nswire-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := BuildPlugins(dir, "plugins/main/nswire", "plugins/ipam/nswire-ipam"); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	ref, err := RefPlugins()
	if err == nil {
		err = setup(dir, ref)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
