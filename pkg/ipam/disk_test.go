package ipam

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func req(conf []byte, id, ifname string) Request {
	return Request{ContainerID: id, IfName: ifname, StdinData: conf}
}

func TestAPILifecycle(t *testing.T) {
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 10.0.0.53\nsearch a.example b.example\n# x\n"), 0o600)
	conf := []byte(`{"cniVersion":"1.1.0","name":"life","ipam":{"type":"nswire-ipam","dataDir":"` + dir + `",
		"resolvConf":"` + resolv + `","routes":[{"dst":"0.0.0.0/0"}],
		"ranges":[[{"subnet":"10.0.0.0/30"}],[{"subnet":"fd00::/64"}]]}}`)
	res, err := Add(req(conf, "ctr1", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 2 || res.IPs[0].Address.String() != "10.0.0.2/30" || res.IPs[0].Gateway.String() != "10.0.0.1" ||
		res.IPs[1].Address.String() != "fd00::2/64" || res.IPs[0].Interface != nil {
		t.Fatalf("result IPs = %v", res.IPs)
	}
	if len(res.Routes) != 1 || len(res.DNS.Nameservers) != 1 || len(res.DNS.Search) != 2 {
		t.Fatalf("routes %v dns %+v", res.Routes, res.DNS)
	}
	again, err := Add(req(conf, "ctr1", "eth0"))
	if err != nil || again.IPs[0].Address.String() != "10.0.0.2/30" {
		t.Fatalf("repeated ADD = %v, %v", again, err)
	}
	if err := Check(req(conf, "ctr1", "eth0")); err != nil {
		t.Fatal(err)
	}
	if err := Status(req(conf, "", "")); errCode(err) != types.ErrPluginNotAvailable {
		t.Fatalf("Status on full /30 = %v, want code 50", err)
	}
	if _, err := Add(req(conf, "ctr2", "eth0")); errCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "10.0.0.1-10.0.0.2") {
		t.Fatalf("ADD on full range = %v", err)
	}
	if err := Check(req(conf, "ctr2", "eth0")); errCode(err) != types.ErrUnknownContainer {
		t.Fatalf("CHECK of unknown = %v, want code 3", err)
	}
	for range 2 {
		if err := Del(req(conf, "ctr1", "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	if err := Status(req(conf, "", "")); err != nil {
		t.Fatalf("Status after DEL = %v", err)
	}
	if err := Check(req(conf, "ctr1", "eth0")); errCode(err) != types.ErrUnknownContainer {
		t.Fatalf("CHECK after DEL = %v", err)
	}
	assertOnlyBookkeeping(t, filepath.Join(dir, "life"))
}

// assertOnlyBookkeeping: no reservation and no index entry left.
func assertOnlyBookkeeping(t *testing.T, netDir string) {
	t.Helper()
	for _, d := range []string{netDir, filepath.Join(netDir, indexDirName)} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			n := e.Name()
			if n != lockFileName && n != indexDirName && n != versionFile && !strings.HasPrefix(n, lastIPPrefix) && !strings.HasPrefix(n, "tmp.") {
				t.Errorf("left behind: %s", filepath.Join(d, n))
			}
		}
	}
}

func TestGCAPI(t *testing.T) {
	dir := t.TempDir()
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := Add(req(conf, id, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	gcConf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`, `"cni.dev/valid-attachments":[{"containerID":"b","ifname":"eth0"}]`)
	if err := GC(req(gcConf, "", "")); err != nil {
		t.Fatal(err)
	}
	if err := Check(req(conf, "b", "eth0")); err != nil {
		t.Fatalf("valid attachment lost: %v", err)
	}
	for _, id := range []string{"a", "c"} {
		if err := Check(req(conf, id, "eth0")); errCode(err) != types.ErrUnknownContainer {
			t.Fatalf("%s survived GC: %v", id, err)
		}
	}
}

// TestUnsafeNamesRejected: hostile names fail before any file is touched.
func TestUnsafeNamesRejected(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	cases := []struct {
		id, ifname string
		code       uint
	}{
		{"../../etc", "eth0", 4}, {"a/b", "eth0", 4}, {"a\nb", "eth0", 4}, {"", "eth0", 4},
		{strings.Repeat("x", 2000), "eth0", 4}, {".hidden", "eth0", 4},
		{"ok", "../x", 4}, {"ok", "a/b", 4}, {"ok", "..", 4}, {"ok", "eth\x01", 4}, {"ok", "eth0123456789abc", 4},
	}
	for _, c := range cases {
		for name, op := range map[string]func(Request) error{
			"add":   func(r Request) error { _, err := Add(r); return err },
			"del":   Del,
			"check": Check,
		} {
			if err := op(req(conf, c.id, c.ifname)); errCode(err) != c.code {
				t.Errorf("%s(%q, %q) = %v, want code %d", name, c.id, c.ifname, err, c.code)
			}
		}
	}
	bad := []byte(`{"name":"../evil","ipam":{"subnet":"10.0.0.0/24","dataDir":"` + dir + `"}}`)
	if err := Del(req(bad, "ok", "eth0")); errCode(err) != 7 {
		t.Errorf("network ../evil: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("rejected requests touched %s", dir)
	}
}

func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	if _, err := Add(req(conf, "a", "eth0")); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(filepath.Join(dir, "testnet"), func(p string, fi os.FileInfo, err error) error {
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
}

// openLocked opens the disk store for white-box tests.
func openLocked(t *testing.T, dir string) *DiskStore {
	t.Helper()
	s, err := OpenDiskStore(dir, "testnet")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCorruptIndexRepaired(t *testing.T) {
	dir := t.TempDir()
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	res, _ := Add(req(conf, "a", "eth0"))
	s := openLocked(t, dir)
	path := s.indexPath(Attachment{"a", "eth0"})
	data, _ := os.ReadFile(path)
	os.WriteFile(path, data[:len(data)/2], 0o600) // torn
	s.Close()
	if err := Check(req(conf, "a", "eth0")); err != nil {
		t.Fatalf("CHECK with torn index: %v", err)
	}
	again, err := Add(req(conf, "a", "eth0"))
	if err != nil || again.IPs[0].Address.String() != res.IPs[0].Address.String() {
		t.Fatalf("ADD after repair = %v, %v", again, err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(data) {
		t.Fatalf("index not rewritten: %q", got)
	}
}

func TestCorruptReservationFile(t *testing.T) {
	dir := t.TempDir()
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/29"}]]`)
	if _, err := Add(req(conf, "a", "eth0")); err != nil {
		t.Fatal(err)
	}
	ipFile := filepath.Join(dir, "testnet", "10.0.0.2")
	os.WriteFile(ipFile, nil, 0o600) // torn: owner unreadable
	if err := Check(req(conf, "a", "eth0")); errCode(err) != types.ErrIOFailure || !strings.Contains(err.Error(), "corrupt reservation") {
		t.Fatalf("CHECK = %v, want code 5 naming the corrupt file", err)
	}
	res, err := Add(req(conf, "b", "eth0"))
	if err != nil || res.IPs[0].Address.IP.String() == "10.0.0.2" {
		t.Fatalf("corrupt address handed out again: %v %v", res, err)
	}
	// GC settles it for the one valid attachment claiming it.
	gc := netConf(t, dir, `[[{"subnet":"10.0.0.0/29"}]]`, `"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]`)
	if err := GC(req(gc, "", "")); err != nil {
		t.Fatal(err)
	}
	if err := Check(req(conf, "a", "eth0")); err != nil {
		t.Fatalf("CHECK after GC: %v", err)
	}
	// Unclaimed corrupt files are removed by GC.
	os.WriteFile(filepath.Join(dir, "testnet", "10.0.0.6"), []byte("\x00\x01"), 0o600)
	if err := GC(req(gc, "", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "testnet", "10.0.0.6")); !os.IsNotExist(err) {
		t.Fatal("unclaimed corrupt reservation kept")
	}
}

// TestRebootRepairs: writes are not fsynced, so after a machine crash the
// first use in the next boot rebuilds the index from the files and settles
// what the crash tore, keeping every readable reservation.
func TestRebootRepairs(t *testing.T) {
	dir := t.TempDir()
	netDir := filepath.Join(dir, "testnet")
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	for _, id := range []string{"a", "b"} {
		if _, err := Add(req(conf, id, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	s := openLocked(t, dir)
	aIndex := s.indexPath(Attachment{"a", "eth0"})
	s.Close()
	// What a crash can leave: a's index torn, b's reservation emptied (its
	// index still claims it), c's reservation without its index, an empty
	// file nobody claims.
	os.WriteFile(aIndex, []byte("nswire-index 1\na\n"), 0o600)
	os.WriteFile(filepath.Join(netDir, "10.0.0.3"), nil, 0o600)
	os.WriteFile(filepath.Join(netDir, "10.0.0.9"), []byte("c\r\neth0"), 0o600)
	os.WriteFile(filepath.Join(netDir, "10.0.0.10"), nil, 0o600)
	version := filepath.Join(netDir, indexDirName, versionFile)
	os.WriteFile(version, []byte("1 00000000-0000-0000-0000-000000000000\n"), 0o600)

	want := map[string]string{"a": "10.0.0.2/24", "b": "10.0.0.3/24", "c": "10.0.0.9/24"}
	for id, ip := range want {
		res, err := Add(req(conf, id, "eth0"))
		if err != nil || res.IPs[0].Address.String() != ip {
			t.Fatalf("ADD of %s after reboot = %v, %v; want %s kept", id, res, err, ip)
		}
	}
	if _, err := os.Stat(filepath.Join(netDir, "10.0.0.10")); !os.IsNotExist(err) {
		t.Error("unclaimed empty reservation kept after reboot")
	}
	current, _ := indexVersion()
	if got, _ := os.ReadFile(version); string(got) != current {
		t.Errorf("version = %q, want %q", got, current)
	}
	for id := range want {
		if err := Del(req(conf, id, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	assertOnlyBookkeeping(t, netDir)
}

// TestMigrateHostLocalLayout: files laid out by host-local are indexed on
// first use and behave as nswire's own.
func TestMigrateHostLocalLayout(t *testing.T) {
	dir := t.TempDir()
	netDir := filepath.Join(dir, "testnet")
	os.MkdirAll(netDir, 0o755)
	os.WriteFile(filepath.Join(netDir, "10.0.0.5"), []byte("old1\r\neth0"), 0o644)
	os.WriteFile(filepath.Join(netDir, "10.0.0.6"), []byte("old2\r\neth0"), 0o644)
	os.WriteFile(filepath.Join(netDir, "10.0.0.7"), []byte("legacy"), 0o644)
	os.WriteFile(filepath.Join(netDir, "last_reserved_ip.0"), []byte("10.0.0.7"), 0o644)
	conf := netConf(t, dir, `[[{"subnet":"10.0.0.0/24"}]]`)
	if err := Check(req(conf, "old1", "eth0")); err != nil {
		t.Fatal(err)
	}
	res, err := Add(req(conf, "old2", "eth0"))
	if err != nil || res.IPs[0].Address.IP.String() != "10.0.0.6" {
		t.Fatalf("ADD of migrated attachment = %v, %v", res, err)
	}
	res, err = Add(req(conf, "new", "eth0"))
	if err != nil || res.IPs[0].Address.IP.String() != "10.0.0.8" {
		t.Fatalf("new ADD = %v, %v (want 10.0.0.8 after the cursor)", res, err)
	}
	if err := Del(req(conf, "old1", "eth0")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(netDir, "10.0.0.5")); !os.IsNotExist(err) {
		t.Fatal("DEL did not release migrated reservation")
	}
}

func TestDanglingIndexIgnored(t *testing.T) {
	dir := t.TempDir()
	s := openLocked(t, dir)
	a := Attachment{"a", "eth0"}
	if err := s.writeIndex(a, []netip.Addr{addr("10.0.0.9")}); err != nil {
		t.Fatal(err)
	}
	if held, err := s.Held(a); err != nil || len(held) != 0 {
		t.Fatalf("Held = %v, %v; want nothing", held, err)
	}
	mustReserve(t, s, Attachment{"b", "eth0"}, "10.0.0.9")
	if err := s.Release(a); err != nil {
		t.Fatal(err)
	}
	if taken, _ := s.Taken(addr("10.0.0.9")); !taken {
		t.Fatal("releasing a stale pointer freed another attachment's address")
	}
}
