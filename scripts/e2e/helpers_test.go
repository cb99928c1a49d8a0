package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

// sysPath is the PATH given to exec'd tools, whatever the test's own is.
const sysPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execTimeout bounds every exec'd tool (podman, cnitool, nft, iptables).
const execTimeout = 60 * time.Second

// leaks records what one test made outside its private namespaces and
// checks, as the test's very last cleanup, that none of it survived.
type leaks struct {
	t        testing.TB
	nsPaths  []string
	nets     []string // network names: no link, cache file or reservation may carry them
	dataDirs []string
}

// newLeaks must be the first thing a test calls: its cleanup runs last.
func newLeaks(t testing.TB) *leaks {
	l := &leaks{t: t}
	t.Cleanup(l.final)
	return l
}

// ns creates a throwaway namespace the leak check expects to be gone.
func (l *leaks) ns() *testutil.NS {
	l.t.Helper()
	n := testutil.NewNS(l.t)
	l.nsPaths = append(l.nsPaths, n.Path())
	return n
}

// host creates a private host namespace (see testutil.NewHost).
func (l *leaks) host(binDirs ...string) *testutil.Host {
	l.t.Helper()
	h := testutil.NewHost(l.t, binDirs...)
	l.nsPaths = append(l.nsPaths, h.Path())
	l.dataDirs = append(l.dataDirs, h.DataDir)
	return h
}

func (l *leaks) network(name, dataDir string) {
	l.nets = append(l.nets, name)
	l.dataDirs = append(l.dataDirs, dataDir)
}

func (l *leaks) final() {
	t := l.t
	for _, p := range l.nsPaths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("leak: namespace %s still exists", p)
		}
	}
	for _, name := range l.nets {
		for _, a := range ownedLinks(t, nil, name) {
			t.Errorf("leak: link %s (%s) in the machine's namespace", a.Name, a.Alias)
		}
		cached, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", name+"-*"))
		for _, c := range cached {
			t.Errorf("leak: libcni cache file %s", c)
		}
		for _, d := range l.dataDirs {
			if n := reservations(d, name); n != 0 {
				t.Errorf("leak: %d reservation files of %s in %s", n, name, d)
			}
		}
	}
}

// ownedLinks lists links of h (nil: the machine's namespace) whose ifalias
// marks them as nswire's for network (any network when network is "").
func ownedLinks(t testing.TB, h *netlink.Handle, network string) []*netlink.LinkAttrs {
	t.Helper()
	var links []netlink.Link
	var err error
	for range 5 { // dumps can be interrupted by concurrent changes
		if h == nil {
			links, err = netlink.LinkList()
		} else {
			links, err = h.LinkList()
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var out []*netlink.LinkAttrs
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Alias, "nswire/"+network) || (network == "" && strings.HasPrefix(a.Alias, "nswire-shaping/")) {
			out = append(out, a)
		}
	}
	return out
}

// reservations counts the address files of network under an IPAM dataDir
// (nswire-ipam and host-local share the layout).
func reservations(dataDir, network string) int {
	entries, _ := os.ReadDir(filepath.Join(dataDir, network))
	n := 0
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			n++
		}
	}
	return n
}

// execIn runs a program with the calling thread switched into n (nil: the
// test's own namespace); the child inherits the namespace. stderr is part
// of the returned error.
func execIn(n ns.NetNS, env []string, name string, args ...string) (string, error) {
	return execInAttr(n, env, nil, name, args...)
}

// execInAttr is execIn with process attributes (namespaces to unshare).
func execInAttr(n ns.NetNS, env []string, attr *syscall.SysProcAttr, name string, args ...string) (string, error) {
	var out string
	run := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append([]string{sysPath}, env...)
		cmd.SysProcAttr = attr
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		out = stdout.String()
		if err != nil {
			return fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return nil
	}
	if n == nil {
		return out, run()
	}
	err := n.Do(func(ns.NetNS) error { return run() })
	return out, err
}

// nftRuleset is `nft list ruleset` inside n.
func nftRuleset(t *testing.T, n ns.NetNS) string {
	t.Helper()
	out, err := execIn(n, nil, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// assertHostClean fails if the private host h still holds anything of
// network: owned links, ifb shaping devices, nftables elements carrying
// the network's attachments, reservation files.
func assertHostClean(t *testing.T, h *testutil.Host, network, dataDir string) {
	t.Helper()
	for _, a := range ownedLinks(t, h.Handle(), "") {
		if strings.HasPrefix(a.Alias, "nswire/"+network+"/") || strings.HasPrefix(a.Alias, "nswire-shaping/") {
			t.Errorf("leak: link %s (%s) in the host namespace", a.Name, a.Alias)
		}
	}
	if rs := nftRuleset(t, h.NetNS); strings.Contains(rs, `"`+network+"/") {
		t.Errorf("leak: nftables elements of %s remain:\n%s", network, grepLines(rs, network+"/"))
	}
	if n := reservations(dataDir, network); n != 0 {
		t.Errorf("leak: %d reservation files of %s", n, network)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

// serve answers every TCP connection on port inside n (all addresses,
// both families) with "nswire-e2e <tag> <peer>\n" until the test ends.
func serve(t *testing.T, n ns.NetNS, port int, tag string) {
	t.Helper()
	var ln net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen :%d: %v", port, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "nswire-e2e %s %s\n", tag, c.RemoteAddr())
			c.Close()
		}
	}()
}

// fetch dials addr from n (nil: the test's namespace) and returns the
// tag the server in serve answered with.
func fetch(n ns.NetNS, ip net.IP, port int) (string, error) {
	addr := net.JoinHostPort(ip.String(), fmt.Sprint(port))
	var tag string
	dial := func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read from %s: %w", addr, err)
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "nswire-e2e" {
			return fmt.Errorf("%s answered %q", addr, line)
		}
		tag = f[1]
		return nil
	}
	if n == nil {
		return tag, dial()
	}
	err := n.Do(func(ns.NetNS) error { return dial() })
	return tag, err
}

// expectTag dials and fails the test unless the server tagged want answered.
func expectTag(t *testing.T, what string, n ns.NetNS, ip net.IP, port int, want string) {
	t.Helper()
	got, err := fetch(n, ip, port)
	if err != nil {
		t.Errorf("%s (%s port %d): %v", what, ip, port, err)
	} else if got != want {
		t.Errorf("%s (%s port %d): answered by %q, want %q", what, ip, port, got, want)
	}
}

// rootQdisc returns the root qdisc of link index idx in h.
func rootQdisc(h *netlink.Handle, idx int) netlink.Qdisc {
	qs, err := h.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}})
	if err != nil {
		return nil
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q
		}
	}
	return nil
}

// hasQdisc reports whether link idx holds a qdisc of the given type.
func hasQdisc(h *netlink.Handle, idx int, typ string) bool {
	qs, _ := h.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: idx}})
	for _, q := range qs {
		if q.Type() == typ {
			return true
		}
	}
	return false
}

// addrsOf lists the addresses on link name in n.
func addrsOf(t *testing.T, n *testutil.NS, name string) []string {
	t.Helper()
	addrs, err := n.Handle().AddrList(n.Link(name), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("addresses of %s: %v", name, err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}
