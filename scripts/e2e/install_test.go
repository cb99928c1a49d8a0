package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMakeInstall: make install puts both binaries and the default
// conflist in place, never overwrites an existing conflist, and make
// uninstall removes what it installed (keeping a conflist the admin
// changed).
func TestMakeInstall(t *testing.T) {
	bin, conf := t.TempDir(), t.TempDir()
	make := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "-s", "-C", "../..", target, "PREFIX_BIN="+bin, "PREFIX_CONF="+conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("install")
	for _, f := range []string{filepath.Join(bin, "nswire"), filepath.Join(bin, "nswire-ipam"), filepath.Join(conf, "10-nswire.conflist")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	custom := filepath.Join(conf, "10-nswire.conflist")
	if err := os.WriteFile(custom, []byte(`{"edited": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	make("install")
	if b, _ := os.ReadFile(custom); string(b) != `{"edited": true}` {
		t.Errorf("make install overwrote an existing conflist: %s", b)
	}
	make("uninstall")
	if _, err := os.Stat(filepath.Join(bin, "nswire")); !os.IsNotExist(err) {
		t.Errorf("make uninstall left the binary: %v", err)
	}
	if _, err := os.Stat(custom); err != nil {
		t.Errorf("make uninstall removed an edited conflist: %v", err)
	}
}
