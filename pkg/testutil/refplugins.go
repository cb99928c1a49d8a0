package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// RefVersion is the containernetworking/plugins release tests and
// benchmarks compare with; CnitoolVersion the cnitool they drive.
const (
	RefVersion     = "v1.10.0"
	CnitoolVersion = "v1.3.1"
)

var refOnce struct {
	sync.Once
	dir string
	err error
}

// RefPlugins returns a directory holding the reference plugins (bridge,
// ptp, loopback, host-local, portmap, firewall, bandwidth, tuning) and
// cnitool, installing them with `go install` on first use: $NSWIRE_REF_BIN,
// or a folder in the user cache.
func RefPlugins() (string, error) {
	refOnce.Do(func() {
		dir := os.Getenv("NSWIRE_REF_BIN")
		if dir == "" {
			cache, err := os.UserCacheDir()
			if err != nil {
				refOnce.err = err
				return
			}
			dir = filepath.Join(cache, "nswire", "ref-"+RefVersion)
		}
		refOnce.dir, refOnce.err = dir, installRef(dir)
	})
	return refOnce.dir, refOnce.err
}

func installRef(dir string) error {
	plugins := []string{"main/bridge", "main/ptp", "main/loopback", "ipam/host-local", "meta/portmap", "meta/firewall", "meta/bandwidth", "meta/tuning"}
	var missing []string
	for _, p := range plugins {
		if _, err := os.Stat(filepath.Join(dir, filepath.Base(p))); err != nil {
			missing = append(missing, "github.com/containernetworking/plugins/plugins/"+p+"@"+RefVersion)
		}
	}
	if err := goInstall(dir, missing...); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "cnitool")); err == nil {
		return nil
	}
	return goInstall(dir, "github.com/containernetworking/cni/cnitool@"+CnitoolVersion)
}

// goInstall installs modules (one module version per call) into dir.
func goInstall(dir string, pkgs ...string) error {
	if len(pkgs) == 0 {
		return nil
	}
	cmd := exec.Command("go", append([]string{"install"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir() // outside this module: the reference is not our dependency
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install %v: %v\n%s", pkgs, err, out)
	}
	return nil
}
