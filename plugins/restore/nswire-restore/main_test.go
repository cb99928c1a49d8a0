package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/restore"
	"github.com/nswire/nswire/pkg/testutil"
)

// binDirs are where libcni finds plugins: ours first, then the reference.
var binDirs []string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithPlugins(m, func(bin, ref string) error {
		binDirs = []string{bin, ref}
		return testutil.BuildPlugins(bin, "plugins/restore/nswire-restore")
	}))
}

// fixture is one test's private host with an upstream and a conf dir
// that nswire-restore reads.
type fixture struct {
	t       *testing.T
	host    *testutil.Host
	up      *testutil.Upstream
	confDir string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	h := testutil.NewHost(t, binDirs...)
	return &fixture{t: t, host: h, up: testutil.NewUpstream(t, h), confDir: t.TempDir()}
}

// network is one nswire network whose conflist is in the conf dir.
type network struct {
	f            *fixture
	name, bridge string
	list         *libcni.NetworkConfigList
}

// network writes a conflist accepting ports and bandwidth; extra keys
// override the plugin's defaults.
func (f *fixture) network(extra map[string]any, subnets ...string) *network {
	f.t.Helper()
	n := &network{f: f, name: testutil.Name("rst"), bridge: testutil.Name("brr")}
	n.write(extra, subnets...)
	return n
}

// write (re)writes the network's conflist.
func (n *network) write(extra map[string]any, subnets ...string) {
	f := n.f
	f.t.Helper()
	var ranges []any
	for _, s := range subnets {
		ranges = append(ranges, []any{map[string]any{"subnet": s}})
	}
	p := map[string]any{"name": n.name, "type": "nswire", "bridge": n.bridge,
		"ipam":         map[string]any{"type": "nswire-ipam", "dataDir": f.host.DataDir, "ranges": ranges},
		"capabilities": map[string]bool{"portMappings": true, "bandwidth": true}}
	for k, v := range extra {
		p[k] = v
	}
	n.list = testutil.ConfList(f.t, "1.1.0", p)
	if err := os.WriteFile(filepath.Join(f.confDir, n.name+".conflist"), n.list.Bytes, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// container is one attachment made through libcni.
type container struct {
	n   *network
	ns  *testutil.NS
	rt  *libcni.RuntimeConf
	res *current.Result
}

func (n *network) add(id string, caps map[string]any) *container {
	n.f.t.Helper()
	c, err := n.tryAdd(id, caps)
	if err != nil {
		n.f.t.Fatalf("ADD %s: %v", id, err)
	}
	return c
}

func (n *network) tryAdd(id string, caps map[string]any) (*container, error) {
	c := &container{n: n, ns: testutil.NewNS(n.f.t)}
	c.rt = testutil.RT(id, c.ns, "eth0")
	c.rt.CapabilityArgs = caps
	r, err := n.f.host.CNI.AddNetworkList(context.Background(), n.list, c.rt)
	if err != nil {
		return c, err
	}
	c.res, err = current.NewResultFromResult(r)
	return c, err
}

func (c *container) del() error {
	return c.n.f.host.CNI.DelNetworkList(context.Background(), c.n.list, c.rt)
}

func (c *container) check() error {
	return c.n.f.host.CNI.CheckNetworkList(context.Background(), c.n.list, c.rt)
}

func (c *container) hostVeth() string {
	return link.HostVethName(ident.Attachment{Network: c.n.name, ContainerID: c.rt.ContainerID, IfName: c.rt.IfName})
}

func (c *container) ip4() net.IP { return testutil.Family(c.res, true).Address.IP }

func ports(p ...map[string]any) map[string]any {
	list := make([]any, len(p))
	for i := range p {
		list[i] = p[i]
	}
	return map[string]any{"portMappings": list}
}

func port(host, cont int, proto, hostIP string) map[string]any {
	return map[string]any{"hostPort": host, "containerPort": cont, "protocol": proto, "hostIP": hostIP}
}

// opts runs pkg/restore on the fixture's host namespace.
func (f *fixture) opts() restore.Options {
	return restore.Options{ConfDir: f.confDir, NetNSFd: int(f.host.Fd()), Logger: testLogger(f.t)}
}

// restore runs one pass in-process and fails t on any error.
func (f *fixture) restore(t testing.TB) restore.Report {
	t.Helper()
	r, err := restore.Restore(context.Background(), f.opts())
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for _, e := range r.Errors {
		t.Errorf("Restore: %v", e)
	}
	return r
}

// nftConn acts on the host namespace's ruleset, as the test process.
func (f *fixture) nftConn(t testing.TB) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.host.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nft runs the nft command in the host namespace: another process, as a
// firewall reload is.
func (f *fixture) nft(t testing.TB, args ...string) string {
	t.Helper()
	var out []byte
	err := f.host.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command("nft", args...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// otherTable makes a table of someone else's, and returns its listing.
func (f *fixture) otherTable(t testing.TB) string {
	t.Helper()
	if !strings.Contains(f.nft(t, "list", "tables"), "table inet other") {
		f.nft(t, "add", "table", "inet", "other")
		f.nft(t, "add", "chain", "inet", "other", "input", "{ type filter hook input priority 10; }")
		f.nft(t, "add", "rule", "inet", "other", "input", "tcp", "dport", "9999", "counter", "accept")
	}
	return f.nft(t, "-a", "list", "table", "inet", "other")
}

// dial connects from n, from laddr when set, within timeout.
func dial(n ns.NetNS, laddr net.IP, addr string, timeout time.Duration) error {
	return n.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: timeout}
		if laddr != nil {
			d.LocalAddr = &net.TCPAddr{IP: laddr}
		}
		c, err := d.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// testLogger sends pkg/restore's log to the test's.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}
