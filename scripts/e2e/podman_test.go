package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/testutil"
)

// podmanCNIVersion: Debian 12's podman 4.3 vendors libcni v1.1.x, which
// knows results up to 1.0.0.
const podmanCNIVersion = "1.0.0"

// podman is one private podman installation: its own storage, run and
// temp dirs and containers.conf; only the network is the machine's.
type podman struct {
	t         *testing.T
	dir       string
	global    []string
	env       []string
	netName   string
	confDir   string
	dataDir   string
	bridge    string
	subnet    *net.IPNet
	conflist  []byte
	hadTables bool
}

func (p *podman) run(args ...string) (string, error) {
	return execIn(nil, p.env, "podman", append(append([]string{}, p.global...), args...)...)
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("%v", err)
	}
	return strings.TrimSpace(out)
}

// TestPodman runs two containers with podman 4.3's CNI backend on an
// nswire network in the machine's own namespace: they ping each other,
// one serves HTTP on a published port reached from the host (127.0.0.1,
// the gateway) and from the other container (hairpin); `podman rm -f`
// leaves no veth, reservation, nftables element or cache file behind, and
// `podman network rm` removes the network.
func TestPodman(t *testing.T) {
	lk := newLeaks(t)
	ensurePackages(t)
	p := newPodman(t)
	lk.network(p.netName, p.dataDir)
	netnsBefore := podmanNetns()

	imageTar := filepath.Join(p.dir, "busybox.tar")
	buildBusyboxTar(t, imageTar)
	image := "localhost/nswire-e2e-busybox:" + p.netName
	p.must("import", imageTar, image)
	if out := p.must("network", "ls", "--format", "{{.Name}} {{.Driver}}"); !strings.Contains(out, p.netName+" nswire") {
		t.Fatalf("podman does not list network %s with driver nswire:\n%s", p.netName, out)
	}

	port := freePort(t)
	runArgs := []string{"run", "-d", "--runtime", "runc", "--network", p.netName,
		"--ulimit", "nofile=10000:10000", "--ulimit", "nproc=1000:1000", "--cap-add", "NET_RAW"}
	nameA, nameB := p.netName+"-a", p.netName+"-b"
	idA := p.must(append(runArgs, "--name", nameA, "-p", fmt.Sprintf("%d:%d", port, servicePort), image, "httpd", "-f", "-p", "80", "-h", "/www")...)
	idB := p.must(append(runArgs, "--name", nameB, image, "sleep", "300")...)
	ipA, ipB := p.containerIP(nameA), p.containerIP(nameB)
	gw := hostIn(p.subnet, net.IPv4(0, 0, 0, 1))

	// kernel state
	for _, id := range []string{idA, idB} {
		hv, err := netlink.LinkByName(link.HostVethName(ident.Attachment{Network: p.netName, ContainerID: id, IfName: "eth0"}))
		if err != nil {
			t.Fatalf("host veth of %.12s: %v", id, err)
		}
		if hv.Attrs().Alias != link.Alias(ident.Attachment{Network: p.netName, ContainerID: id, IfName: "eth0"}) {
			t.Errorf("host veth alias %q", hv.Attrs().Alias)
		}
	}
	if n := reservations(p.dataDir, p.netName); n != 2 {
		t.Errorf("%d reservations for two containers", n)
	}
	if rs := nftRuleset(t, nil); !strings.Contains(rs, fmt.Sprintf("%q", p.netName+"/"+idA+"/eth0")) {
		t.Errorf("no nftables element for the published port of %.12s", idA)
	}

	// traffic
	for _, x := range [][2]string{{nameA, ipB.String()}, {nameB, ipA.String()}} {
		if out, err := p.run("exec", x[0], "ping", "-c", "1", "-W", "2", x[1]); err != nil {
			t.Errorf("%s cannot ping %s: %v\n%s", x[0], x[1], err, out)
		}
	}
	for _, host := range []net.IP{net.IPv4(127, 0, 0, 1), gw} {
		if body, err := httpGet(net.JoinHostPort(host.String(), fmt.Sprint(port))); err != nil || body != "hello from nswire\n" {
			t.Errorf("published port from the host at %s:%d: %q %v", host, port, body, err)
		}
	}
	url := fmt.Sprintf("http://%s/", net.JoinHostPort(gw.String(), fmt.Sprint(port)))
	// (busybox-static's wget -T crashes; timeout bounds it instead)
	if out, err := p.run("exec", nameB, "timeout", "5", "wget", "-q", "-O", "-", url); err != nil || out != "hello from nswire\n" {
		t.Errorf("hairpin: %s -> %s: %q %v", nameB, url, out, err)
	}

	// podman rm -f: DEL through podman's libcni
	p.must("rm", "-f", "-t", "0", nameA, nameB)
	for _, a := range ownedLinks(t, nil, p.netName+"/") {
		t.Errorf("after podman rm: link %s (%s) left", a.Name, a.Alias)
	}
	if n := reservations(p.dataDir, p.netName); n != 0 {
		t.Errorf("after podman rm: %d reservations left", n)
	}
	if rs := nftRuleset(t, nil); strings.Contains(rs, `"`+p.netName+"/") {
		t.Errorf("after podman rm: nftables elements left:\n%s", grepLines(rs, p.netName+"/"))
	}
	if left := newEntries(netnsBefore, podmanNetns()); len(left) > 0 {
		t.Errorf("after podman rm: network namespaces left: %v", left)
	}

	p.must("network", "rm", p.netName)
	if out := p.must("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, p.netName) {
		t.Errorf("podman network rm: %s still listed", p.netName)
	}
	if files, _ := filepath.Glob(filepath.Join(p.confDir, "*.conflist")); len(files) != 0 {
		t.Errorf("podman network rm left %v", files)
	}
}

func newPodman(t *testing.T) *podman {
	p := &podman{t: t, dir: privateDir(t), netName: testutil.Name("nswe2e-net"), bridge: testutil.Name("nswe2e")}
	p.subnet = freeSubnet(t)
	for _, d := range []string{"root", "runroot", "tmp", "net", "data"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p.confDir, p.dataDir = filepath.Join(p.dir, "net"), filepath.Join(p.dir, "data")
	p.global = []string{"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "runroot"),
		"--tmpdir", filepath.Join(p.dir, "tmp"), "--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs", "--events-backend", "file"}
	conf := fmt.Sprintf(`[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "cni"
cni_plugin_dirs = [%q, %q]
network_config_dir = %q
`, binDir, refDir, p.confDir)
	confPath := filepath.Join(p.dir, "containers.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.env = []string{"CONTAINERS_CONF=" + confPath, "HOME=" + p.dir}
	p.conflist = p.confList(podmanCNIVersion)
	if err := os.WriteFile(filepath.Join(p.confDir, p.netName+".conflist"), p.conflist, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := execIn(nil, nil, "nft", "list", "table", "inet", "nswire")
	p.hadTables = err == nil
	// `podman import` writes containers/image's blob-info cache under
	// /var/lib/containers/cache whatever --root says.
	if _, err := os.Stat("/var/lib/containers"); os.IsNotExist(err) {
		t.Cleanup(func() {
			os.RemoveAll("/var/lib/containers/cache")
			os.Remove("/var/lib/containers")
		})
	}
	// Cleanups run newest first: podman's containers, then the host.
	t.Cleanup(p.cleanHost)
	t.Cleanup(func() {
		_, _ = p.run("rm", "-f", "-a", "-t", "0")
		_, _ = p.run("network", "rm", "-f", p.netName)
		_, _ = p.run("rmi", "-a", "-f")
	})
	return p
}

func (p *podman) confList(version string) []byte {
	b, _ := json.MarshalIndent(map[string]any{
		"cniVersion": version, "name": p.netName,
		"plugins": []any{map[string]any{
			"type": "nswire", "bridge": p.bridge,
			"capabilities": map[string]bool{"portMappings": true},
			"ipam": map[string]any{"type": "nswire-ipam", "dataDir": p.dataDir,
				"ranges": [][]map[string]string{{{"subnet": p.subnet.String()}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}},
		}},
	}, "", "  ")
	return b
}

// cleanHost removes what the network may have left in the machine's
// namespace: attachments (nswire GC with no valid attachment), the
// network-level nftables elements GC does not remove yet, the bridge, the
// nswire tables if this test created them and they are empty, cache files.
func (p *podman) cleanHost() {
	t := p.t
	list, err := libcni.NetworkConfFromBytes(p.confList("1.1.0"))
	if err == nil {
		cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
		if err := cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{}); err != nil {
			t.Errorf("cleanup: nswire GC: %v", err)
		}
	}
	s := p.subnet.String()
	for _, set := range []string{"nets4", "iso4", "masq4", "internal4"} {
		_, _ = execIn(nil, nil, "nft", "delete", "element", "inet", "nswire", set, "{ "+s+" }")
	}
	for _, set := range []string{"intra4", "noicc4"} {
		_, _ = execIn(nil, nil, "nft", "delete", "element", "inet", "nswire", set, "{ "+s+" . "+s+" }")
	}
	if l, err := netlink.LinkByName(p.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("cleanup: delete bridge %s: %v", p.bridge, err)
		}
	}
	if !p.hadTables {
		rs := nftRuleset(t, nil)
		if !strings.Contains(rs, "elements = ") && !strings.Contains(rs, "chain a-") && !strings.Contains(rs, "chain g-") {
			_, _ = execIn(nil, nil, "nft", "delete", "table", "inet", "nswire")
			_, _ = execIn(nil, nil, "nft", "delete", "table", "bridge", "nswire")
		}
	}
	files, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", p.netName+"-*"))
	for _, f := range files {
		os.Remove(f)
	}
}

func (p *podman) containerIP(name string) net.IP {
	p.t.Helper()
	out := p.must("inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, p.netName), name)
	ip := net.ParseIP(out)
	if ip == nil || !p.subnet.Contains(ip) {
		p.t.Fatalf("%s has address %q, not in %s", name, out, p.subnet)
	}
	return ip
}

// ensurePackages installs podman, runc and busybox-static when missing.
func ensurePackages(t *testing.T) {
	t.Helper()
	missing := false
	for _, bin := range []string{"podman", "runc", "conmon"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = true
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing = true
	}
	if !missing {
		return
	}
	install := []string{"install", "-y", "-qq", "podman", "runc", "busybox-static"}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if _, err := execIn(nil, env, "apt-get", install...); err != nil {
		if _, err := execIn(nil, env, "apt-get", "update", "-qq"); err != nil {
			t.Fatalf("apt-get update: %v", err)
		}
		if _, err := execIn(nil, env, "apt-get", install...); err != nil {
			t.Fatalf("install podman: %v", err)
		}
	}
}

// buildBusyboxTar writes a root filesystem holding /bin/busybox, the
// applets the test uses and /www/index.html, for `podman import`.
func buildBusyboxTar(t *testing.T, path string) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	hdr := func(h *tar.Header, body []byte) {
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "www/", "tmp/", "proc/", "sys/", "dev/", "etc/"} {
		hdr(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	hdr(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}, bb)
	for _, applet := range []string{"sh", "httpd", "ping", "sleep", "wget", "timeout", "ip", "cat"} {
		hdr(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	page := []byte("hello from nswire\n")
	hdr(&tar.Header{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(page))}, page)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// privateDir is a temp dir removed at the end even if podman left mounts
// (container shm, overlay) in it.
func privateDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "nswire-e2e-podman")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testutil.UnmountUnder(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// freeSubnet picks 10.231.x.0/24 that no address or route of the machine
// overlaps.
func freeSubnet(t *testing.T) *net.IPNet {
	t.Helper()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("routes: %v", err)
	}
	addrs, _ := netlink.AddrList(nil, netlink.FAMILY_V4)
	start := 100 + os.Getpid()%100
	for i := range 150 {
		_, n, _ := net.ParseCIDR(fmt.Sprintf("10.231.%d.0/24", 100+(start-100+i)%150))
		clash := false
		for _, r := range routes {
			if r.Dst != nil && (r.Dst.Contains(n.IP) || n.Contains(r.Dst.IP)) && !r.Dst.IP.IsUnspecified() {
				clash = true
			}
		}
		for _, a := range addrs {
			clash = clash || n.Contains(a.IP)
		}
		if !clash {
			return n
		}
	}
	t.Fatalf("no free 10.231.x.0/24")
	return nil
}

// freePort is a TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpGet(addr string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// podmanNetns lists the network namespaces podman made (netns-<uuid>).
func podmanNetns() map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "netns-") {
			out[e.Name()] = true
		}
	}
	return out
}

func newEntries(before, after map[string]bool) []string {
	var out []string
	for n := range after {
		if !before[n] {
			out = append(out, n)
		}
	}
	return out
}
