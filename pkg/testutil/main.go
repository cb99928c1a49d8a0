package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RunWithPlugins is the body of a TestMain for tests that drive the plugin
// binaries. Without root it builds nothing and runs the tests, each of
// which skips (with its reason) at its first namespace or daemon; see
// requireRoot. Otherwise it builds nswire and nswire-ipam into a temporary
// directory, installs the reference plugins if missing, hands both
// directories to setup and runs the tests.
func RunWithPlugins(m *testing.M, setup func(bin, ref string) error) int {
	if os.Geteuid() != 0 {
		return m.Run()
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

// requireRoot skips the test (or ends a program) when the process cannot
// make namespaces, links and nftables tables: go test -v then shows SKIP
// with the reason rather than a silent ok.
func requireRoot(t T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root: network namespaces, links, nftables and daemons"
	if s, ok := t.(interface{ Skip(...any) }); ok {
		s.Skip(why)
	}
	t.Fatalf("%s", why)
}
