package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nswire/nswire/pkg/testutil"
)

var (
	binDir  string // nswire, nswire-ipam and nswire-agent, built for this run
	refDir  string // reference plugins v1.10.0 and cnitool
	cnitool string
	repo    string // module root, for conf/
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithPlugins(m, func(bin, ref string) error {
		binDir, refDir, cnitool = bin, ref, filepath.Join(ref, "cnitool")
		if err := testutil.BuildPlugins(bin, "plugins/agent/nswire-agent"); err != nil {
			return err
		}
		var err error
		if repo, err = moduleRoot(); err != nil {
			return err
		}
		// cnitool runs with its private cache bind-mounted here (see cniTool).
		return os.MkdirAll("/var/lib/cni", 0o700)
	}))
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
