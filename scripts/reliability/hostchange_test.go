package reliability

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/testutil"
)

// hostFixture is a bridge network with published ports and two running
// containers, a and b, serving on port 80.
type hostFixture struct {
	*rig
	n    *network
	reg  *registry
	a, b *att
	port int
}

func newHostFixture(t *testing.T, dataDir string) *hostFixture {
	t.Helper()
	f := &hostFixture{rig: newRig(t), reg: &registry{}, port: 8080}
	f.n = f.newNetwork(false, "10.79.0.0/24")
	if dataDir != "" {
		f.n.dataDir = dataDir
		f.n.conf["ipam"].(map[string]any)["dataDir"] = dataDir
	}
	f.tidy(func() []*network { return []*network{f.n} }, f.reg)
	f.a, f.b = f.container("a"), f.container("b")
	for _, c := range []*att{f.a, f.b} {
		f.mustAdd(c)
		f.reg.put(c)
	}
	f.assertWorks(f.a, f.b)
	return f
}

// container returns an attachment (not yet added) serving on :80 with a
// published port of its own.
func (f *hostFixture) container(id string) *att {
	f.port++
	c := &att{net: f.n, id: id, ifname: "eth0", ns: testutil.NewNS(f.t), rc: map[string]any{"portMappings": ports(f.port, 80)}}
	testutil.Serve(f.t, c.ns, "tcp", ":80")
	return c
}

// published asks c's published port on the gateway from the host.
func (f *hostFixture) published(c *att) error {
	hp := strconv.Itoa(int(c.rc["portMappings"].([]any)[0].(map[string]any)["hostPort"].(int)))
	_, err := testutil.Ask(f.host.NS, "tcp", net.JoinHostPort(c.gateway(true).String(), hp))
	return err
}

// honest fails when CHECK and reality disagree about c: CHECK must fail
// with code 100 naming want when c is broken, and pass when it works.
func (f *hostFixture) honest(c, peer *att, when, want string) (works bool) {
	f.t.Helper()
	err := testutil.Connect(c.ns, peer.ns, peer.ip(true))
	if err == nil {
		err = f.published(c)
	}
	chk := f.check(c)
	f.t.Logf("%s: %s works=%v (%v), CHECK: %v", when, c, err == nil, err, chk)
	switch {
	case chk != nil && !isCNI(chk):
		f.t.Errorf("%s: CHECK %s failed without a CNI error (panic?): %v", when, c, chk)
	case err != nil && chk == nil:
		f.t.Errorf("%s: %s is broken (%v) but CHECK passes", when, c, err)
	case chk != nil && want != "" && !strings.Contains(chk.Error(), want):
		f.t.Errorf("%s: CHECK %s: %v, want a message naming %q", when, c, chk, want)
	}
	return err == nil
}

func isCNI(err error) bool {
	var e *types.Error
	return errors.As(err, &e) && e.Code != types.ErrInternal
}

// finish DELs everything and checks the host is clean.
func (f *hostFixture) finish(extra ...*att) {
	f.t.Helper()
	for _, c := range append([]*att{f.a, f.b}, extra...) {
		if _, err := f.run(f.delCall(c)); err != nil {
			f.t.Errorf("DEL %s: %v", c, err)
		}
		f.reg.drop(c)
	}
	f.assertExactly([]*network{f.n}, nil)
	f.host.AssertNoLeaks()
}

// addNew ADDs two fresh containers and proves they work: each other,
// their gateway, their published ports and CHECK. Existing containers may
// be damaged, so they are not used as peers.
func (f *hostFixture) addNew(ids ...string) []*att {
	f.t.Helper()
	var out []*att
	for _, id := range ids {
		c := f.container(id)
		f.reg.put(c)
		if err := f.add(c); err != nil {
			f.t.Fatalf("ADD %s after the damage: %v", c, err)
		}
		if err := f.published(c); err != nil {
			f.t.Errorf("new container %s: published port: %v", c, err)
		}
		out = append(out, c)
	}
	if err := f.works(out[0], out[1]); err != nil {
		f.t.Errorf("new containers: %v", err)
	}
	return out
}

// TestBridgeDeletedByAdmin: CHECK names the missing bridge; the next ADD
// recreates it and the new container works. Existing containers' host
// ends are no longer enslaved: they stay broken until re-created, and
// CHECK must say so.
func TestBridgeDeletedByAdmin(t *testing.T) {
	t.Parallel()
	f := newHostFixture(t, "")
	if err := f.host.Handle().LinkDel(f.host.Link(f.n.bridge)); err != nil {
		t.Fatal(err)
	}
	f.honest(f.a, f.b, "bridge deleted", f.n.bridge)
	c := f.addNew("c", "d")
	f.honest(f.a, c[0], "after the next ADD", "master")
	f.finish(c...)
}

// TestBridgeDownByAdmin: CHECK names the down bridge; the next ADD sets
// it up again, which repairs the existing containers too.
func TestBridgeDownByAdmin(t *testing.T) {
	t.Parallel()
	f := newHostFixture(t, "")
	if err := f.host.Handle().LinkSetDown(f.host.Link(f.n.bridge)); err != nil {
		t.Fatal(err)
	}
	f.honest(f.a, f.b, "bridge down", "down")
	c := f.addNew("c", "d")
	if !f.honest(f.a, f.b, "after the next ADD", "") {
		t.Errorf("the next ADD set the bridge up, yet %s still does not work", f.a)
	}
	f.finish(c...)
}

func nftConn(t *testing.T, host *testutil.NS) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(host.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNftTablesDeletedByAdmin: `nft delete table inet nswire; nft delete
// table bridge nswire`. CHECK names the firewall; the next ADD recreates
// the tables and the new container's published port works. Existing
// containers lose their published ports and anti-spoofing; CHECK must
// report it.
func TestNftTablesDeletedByAdmin(t *testing.T) {
	afterNftDamage(t, "tables deleted", func(c *nftables.Conn) {
		c.DelTable(&nftables.Table{Name: "nswire", Family: nftables.TableFamilyINet})
		c.DelTable(&nftables.Table{Name: "nswire", Family: nftables.TableFamilyBridge})
	})
}

// TestNftTableFlushedByAdmin: `nft flush table inet nswire` (every rule
// gone, chains and sets kept). The next ADD must leave a working
// published port for the new container.
func TestNftTableFlushedByAdmin(t *testing.T) {
	afterNftDamage(t, "table flushed", func(c *nftables.Conn) {
		c.FlushTable(&nftables.Table{Name: "nswire", Family: nftables.TableFamilyINet})
	})
}

// afterNftDamage applies an admin's nftables change to a host with live
// containers, then checks that CHECK tells the truth about them before and
// after the next ADD, and that new containers work.
func afterNftDamage(t *testing.T, what string, damage func(*nftables.Conn)) {
	t.Parallel()
	f := newHostFixture(t, "")
	c := nftConn(t, f.host.NS)
	damage(c)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	f.honest(f.a, f.b, what, "")
	n := f.addNew("c", "d")
	f.honest(f.a, f.b, "after the next ADD", "")
	f.finish(n...)
}

// TestIPAMDirRemovedByAdmin: `rm -rf dataDir/<network>`. CHECK names the
// lost reservation; the next ADD works and must not hand out an address a
// running container still uses.
func TestIPAMDirRemovedByAdmin(t *testing.T) {
	t.Parallel()
	f := newHostFixture(t, "")
	if err := os.RemoveAll(f.n.ipamDir()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*att{f.a, f.b} {
		if err := f.check(c); err == nil || !strings.Contains(err.Error(), "reservation") {
			t.Errorf("CHECK %s with its reservation gone: %v, want an error naming the reservation", c, err)
		}
	}
	c := f.container("c")
	f.reg.put(c)
	if err := f.add(c); err != nil {
		t.Fatalf("ADD after the directory was removed: %v", err)
	}
	for _, old := range []*att{f.a, f.b} {
		if c.ip(true).Equal(old.ip(true)) {
			t.Errorf("ADD handed out %s, which running container %s still holds", c.ip(true), old)
		}
	}
	if err := testutil.Connect(c.ns, f.host.NS, c.gateway(true)); err != nil {
		t.Errorf("new container: %v", err)
	}
	f.finish(c)
}

// mountTmpfs mounts a private tmpfs of the given size for a dataDir; it is
// unmounted in cleanup.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// listTree describes every file under dir (name, size, mode).
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		lines = append(lines, strings.TrimPrefix(p, dir)+" "+info.Mode().String()+" "+strconv.FormatInt(info.Size(), 10))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// refusedCleanly runs ADD for a new container and asserts a CNI error and
// no change at all: host and container snapshots, dataDir tree, leaks.
func (f *hostFixture) refusedCleanly(id string, dataDir string) {
	f.t.Helper()
	c := &att{net: f.n, id: id, ifname: "eth0", ns: testutil.NewNS(f.t), rc: map[string]any{"portMappings": ports(9999, 80), "bandwidth": fastBandwidth}}
	hostBefore, ctrBefore, treeBefore := f.host.Snapshot(), c.ns.Snapshot(), listTree(f.t, dataDir)
	err := f.add(c)
	if err == nil {
		f.reg.put(c)
		f.t.Fatalf("ADD %s succeeded on an unwritable dataDir", c)
	}
	if !isCNI(err) {
		f.t.Errorf("ADD failed without a typed CNI error: %v", err)
	}
	f.t.Logf("refused: %v", err)
	if after := f.host.Snapshot(); after != hostBefore {
		f.t.Errorf("host changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
	if after := c.ns.Snapshot(); after != ctrBefore {
		f.t.Errorf("container changed:\nbefore:\n%s\nafter:\n%s", ctrBefore, after)
	}
	if after := listTree(f.t, dataDir); after != treeBefore {
		f.t.Errorf("dataDir changed:\nbefore:\n%s\nafter:\n%s", treeBefore, after)
	}
	f.assertExactly([]*network{f.n}, []*att{f.a, f.b})
}

// TestReadOnlyDataDir: the dataDir is remounted read-only under running
// containers; ADD fails with a CNI error and changes nothing; once it is
// writable again ADD works.
func TestReadOnlyDataDir(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "4m")
	f := newHostFixture(t, dir)
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount ro: %v", err)
	}
	f.refusedCleanly("ro", dir)
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT, "size=4m"); err != nil {
		t.Fatalf("remount rw: %v", err)
	}
	c := f.addNew("c", "d")
	f.finish(c...)
}

// TestFullDataDir: the dataDir's filesystem is full; ADD fails with a CNI
// error and changes nothing; once space is freed ADD works.
func TestFullDataDir(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "256k")
	f := newHostFixture(t, dir)
	filler := filepath.Join(dir, "filler")
	fh, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := fh.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	fh.Close()
	f.refusedCleanly("full", dir)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c := f.addNew("c", "d")
	f.finish(c...)
}

// TestSecondNetworkDefaultRoute: a container on two networks (Multus,
// podman with two networks). The second ADD cannot install its default
// route (the first network's is there); it must either fail cleanly or
// report only what it installed: a successful ADD followed at once by a
// failing CHECK is a lie.
func TestSecondNetworkDefaultRoute(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	n1, n2 := r.newNetwork(false, "10.83.0.0/24"), r.newNetwork(false, "10.84.0.0/24")
	reg := &registry{}
	r.tidy(func() []*network { return []*network{n1, n2} }, reg)
	cns := testutil.NewNS(t)
	first := &att{net: n1, id: "multi", ifname: "eth0", ns: cns, rc: map[string]any{}}
	second := &att{net: n2, id: "multi", ifname: "eth1", ns: cns, rc: map[string]any{}}
	r.mustAdd(first)
	reg.put(first)
	reg.put(second)
	if err := r.add(second); err != nil {
		t.Logf("second ADD refused: %v", err)
		if !isCNI(err) {
			t.Errorf("second ADD failed without a typed CNI error: %v", err)
		}
	} else if err := r.check(second); err != nil {
		t.Errorf("ADD on a second network succeeded and reported a default route via %s, but CHECK right after fails: %v",
			second.gateway(true), err)
	}
	for _, a := range []*att{second, first} {
		r.mustDel(a)
		reg.drop(a)
	}
	r.assertExactly([]*network{n1, n2}, nil)
}
