package agent

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/nswire/nswire/pkg/config"
	"github.com/nswire/nswire/pkg/ipam"
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// loadRendered checks the bytes as runtimes and the plugin read them:
// libcni parses the list, nswire and nswire-ipam validate the plugin's
// config with name and cniVersion injected as libcni does on execution.
func loadRendered(t *testing.T, data []byte) *config.Net {
	t.Helper()
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("libcni: %v\n%s", err, data)
	}
	if list.Name != "nswire" || list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 {
		t.Fatalf("list %s %s with %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
	}
	var raw map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &raw); err != nil {
		t.Fatal(err)
	}
	raw["name"], raw["cniVersion"] = list.Name, list.CNIVersion
	stdin, _ := json.Marshal(raw)
	n, err := config.Load(stdin, "")
	if err != nil {
		t.Fatalf("nswire config: %v\n%s", err, stdin)
	}
	if _, err := ipam.ParseConfig(stdin, ""); err != nil {
		t.Fatalf("nswire-ipam config: %v\n%s", err, stdin)
	}
	return n
}

func TestRenderConflistIPv4(t *testing.T) {
	data, err := RenderConflist(prefixes("10.244.1.0/24"), Network{ClusterCIDRs: prefixes("10.244.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	n := loadRendered(t, data)
	if !n.Masquerade() || !n.Hairpin() || n.Bridge != "nswire0" {
		t.Errorf("masquerade %v hairpin %v bridge %q", n.Masquerade(), n.Hairpin(), n.Bridge)
	}
	var got conflist
	json.Unmarshal(data, &got)
	p := got.Plugins[0]
	if len(p.IPAM.Ranges) != 1 || p.IPAM.Ranges[0][0].Subnet != "10.244.1.0/24" {
		t.Errorf("ranges %+v", p.IPAM.Ranges)
	}
	if len(p.IPAM.Routes) != 1 || p.IPAM.Routes[0].Dst != "0.0.0.0/0" {
		t.Errorf("routes %+v", p.IPAM.Routes)
	}
	if len(p.NonMasqueradeCIDRs) != 1 || p.NonMasqueradeCIDRs[0] != "10.244.0.0/16" {
		t.Errorf("nonMasqueradeCIDRs %v", p.NonMasqueradeCIDRs)
	}
	if !p.Capabilities["portMappings"] || !p.Capabilities["bandwidth"] {
		t.Errorf("capabilities %v", p.Capabilities)
	}
}

func TestRenderConflistDualStack(t *testing.T) {
	data, err := RenderConflist(prefixes("10.244.1.0/24", "fd00:10:244:1::/64"), Network{ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/56")})
	if err != nil {
		t.Fatal(err)
	}
	loadRendered(t, data)
	var got conflist
	json.Unmarshal(data, &got)
	p := got.Plugins[0]
	if len(p.IPAM.Ranges) != 2 || p.IPAM.Ranges[1][0].Subnet != "fd00:10:244:1::/64" {
		t.Errorf("ranges %+v", p.IPAM.Ranges)
	}
	if len(p.IPAM.Routes) != 2 || p.IPAM.Routes[1].Dst != "::/0" {
		t.Errorf("routes %+v", p.IPAM.Routes)
	}
	again, _ := RenderConflist(prefixes("10.244.1.0/24", "fd00:10:244:1::/64"), Network{ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/56")})
	if string(again) != string(data) {
		t.Error("rendering is not deterministic")
	}
	if _, err := RenderConflist(nil, Network{ClusterCIDRs: prefixes("10.244.0.0/16")}); err == nil {
		t.Error("no pod CIDR rendered a conflist")
	}
}

func statOf(t *testing.T, path string) (os.FileInfo, uint64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi, fi.Sys().(*syscall.Stat_t).Ino
}

func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // missing: created
	path := filepath.Join(dir, ConflistName)
	if changed, err := writeAtomic(dir, ConflistName, []byte("one"), 0o644); err != nil || !changed {
		t.Fatalf("first write: changed %v err %v", changed, err)
	}
	before, ino := statOf(t, path)
	if before.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", before.Mode())
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old) // a rewrite would be seen even within one clock tick
	if changed, err := writeAtomic(dir, ConflistName, []byte("one"), 0o644); err != nil || changed {
		t.Fatalf("same content: changed %v err %v", changed, err)
	}
	same, sameIno := statOf(t, path)
	if !same.ModTime().Equal(old) || sameIno != ino {
		t.Errorf("unchanged content rewritten: mtime %v inode %d -> %d", same.ModTime(), ino, sameIno)
	}
	if changed, err := writeAtomic(dir, ConflistName, []byte("two"), 0o644); err != nil || !changed {
		t.Fatalf("new content: changed %v err %v", changed, err)
	}
	if _, newIno := statOf(t, path); newIno == ino {
		t.Error("new content written in place, not renamed over")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

// TestInstallWhileRunning replaces a binary that is executing: a plain
// copy over it fails with "text file busy" (ETXTBSY); the rename does not.
func TestInstallWhileRunning(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary to run")
	}
	data, _ := os.ReadFile(sleep)
	os.WriteFile(filepath.Join(dst, "nswire"), data, 0o755)
	os.WriteFile(filepath.Join(src, "nswire"), []byte("#!/bin/sh\nexit 0\n"), 0o644)
	os.WriteFile(filepath.Join(src, "nswire-ipam"), []byte("ipam"), 0o644)
	cmd := exec.Command(filepath.Join(dst, "nswire"), "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	written, err := Install(src, dst, "nswire", "nswire-ipam")
	if err != nil || len(written) != 2 {
		t.Fatalf("install over a running binary: written %v err %v", written, err)
	}
	fi, _ := statOf(t, filepath.Join(dst, "nswire"))
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", fi.Mode())
	}
	if out, err := exec.Command(filepath.Join(dst, "nswire")).CombinedOutput(); err != nil {
		t.Errorf("installed binary does not run: %v %s", err, out)
	}
	if written, err := Install(src, dst, "nswire", "nswire-ipam"); err != nil || len(written) != 0 {
		t.Errorf("second install: written %v err %v", written, err)
	}
	if _, err := Install(src, dst, "missing"); err == nil {
		t.Error("a missing binary installed")
	}
}
