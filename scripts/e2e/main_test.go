package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nswire/nswire/pkg/testutil"
)

// CnitoolVersion is the cnitool release the tests drive (scripts/deps.sh
// installs the same one next to the reference plugins).
const CnitoolVersion = "v1.3.1"

var (
	binDir  string // nswire and nswire-ipam, built for this run
	refDir  string // reference plugins v1.10.0 and cnitool
	cnitool string
	repo    string // module root, for conf/
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, needs root (namespaces, links, nftables, podman)")
		return 0
	}
	dir, err := os.MkdirTemp("", "nswire-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if repo, err = moduleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	build := exec.Command("go", "build", "-o", binDir+"/", "./plugins/main/nswire", "./plugins/ipam/nswire-ipam")
	build.Dir, build.Stdout, build.Stderr = repo, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	if refDir, err = testutil.RefPlugins(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if cnitool, err = ensureCnitool(refDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// cnitool runs with its private cache bind-mounted here (see cniTool).
	if err := os.MkdirAll("/var/lib/cni", 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// moduleRoot is the directory holding go.mod (tests run in scripts/e2e).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := string(out[:len(out)-1])
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the nswire module")
	}
	return filepath.Dir(mod), nil
}

// ensureCnitool installs cnitool into the reference directory the way
// scripts/deps.sh does, when missing (testutil.RefPlugins does not).
func ensureCnitool(dir string) (string, error) {
	bin := filepath.Join(dir, "cnitool")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@"+CnitoolVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("install cnitool: %v\n%s", err, out)
	}
	return bin, nil
}
