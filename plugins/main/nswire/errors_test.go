package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/testutil"
)

// Failures a user or an admin can cause get a CNI code of their own and a
// message that names the object, never 999 (README "Errors").

// nft runs nft in the fixture's host namespace.
func (f *fixture) nft(args ...string) {
	f.t.Helper()
	f.host.Run(func() error {
		out, err := exec.Command("nft", args...).CombinedOutput()
		if err != nil {
			f.t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	})
}

// execAs runs the nswire binary through setpriv with opts (fewer
// privileges), for verb, and returns the CNI error it printed.
func execAs(t *testing.T, f *fixture, opts []string, verb string, c *container, stdin []byte) *types.Error {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "nswire")
	script := "#!/bin/sh\nexec setpriv " + strings.Join(opts, " ") + " " + filepath.Join(binDirs[0], "nswire") + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + c.rt.ContainerID, "CNI_IFNAME=eth0",
		"CNI_NETNS=" + c.ns.Path(), "CNI_PATH=" + strings.Join(binDirs, ":")}
	out, err := f.host.Exec(wrapper, env, stdin)
	if err == nil {
		t.Fatalf("%s succeeded without privileges: %s", verb, out)
	}
	var e types.Error
	if jerr := json.Unmarshal(out, &e); jerr != nil {
		t.Fatalf("%s: output is not a CNI error (%v): %q", verb, jerr, out)
	}
	return &e
}

// stdinFor is the plugin's config as libcni sends it, with the result of
// c's ADD as prevResult when c is not nil.
func stdinFor(t *testing.T, f *fixture, c *container, subnet string) []byte {
	t.Helper()
	p := f.plugin(nil, subnet)
	p["cniVersion"] = "1.1.0"
	if c != nil {
		p["prevResult"] = c.res
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantCode fails unless e has code and its text holds every one of words.
func wantCode(t *testing.T, what string, e *types.Error, code uint, words ...string) {
	t.Helper()
	if e.Code != code {
		t.Errorf("%s: code %d, want %d: %v", what, e.Code, code, e)
	}
	for _, w := range words {
		if !strings.Contains(e.Error(), w) {
			t.Errorf("%s: %q does not mention %q", what, e.Error(), w)
		}
	}
}

// once fails unless e's text holds the kernel's answer exactly once: a
// transaction reports each errno once, not once per message.
func once(t *testing.T, e *types.Error, answer string) {
	t.Helper()
	if n := strings.Count(e.Error(), answer); n != 1 {
		t.Errorf("%q holds %q %d times, want once", e.Error(), answer, n)
	}
}

// TestErrorsWithoutPrivilege: a kernel or file system that refuses nswire
// is code 102, named; CHECK does not take it for a difference (100).
func TestErrorsWithoutPrivilege(t *testing.T) {
	f := newFixture(t)
	const subnet = "10.64.0.0/24"
	list := f.list("1.1.0", nil, subnet)
	c := f.add(list, "priv")
	noNetAdmin := []string{"--inh-caps=-net_admin", "--bounding-set=-net_admin"}

	e := execAs(t, f, noNetAdmin, "CHECK", c, stdinFor(t, f, c, subnet))
	wantCode(t, "CHECK without CAP_NET_ADMIN", e, 102, "CAP_NET_ADMIN", "operation not permitted")

	e = execAs(t, f, noNetAdmin, "DEL", c, stdinFor(t, f, c, subnet))
	wantCode(t, "DEL without CAP_NET_ADMIN", e, 102, "operation not permitted")

	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
	other := &container{ns: testutil.NewNS(t)}
	other.rt = testutil.RT("nobody", other.ns, "eth0")
	e = execAs(t, f, nobody, "ADD", other, stdinFor(t, f, nil, subnet))
	wantCode(t, "ADD as nobody", e, 102, "not permitted")
	f.assertGone(other)

	f.del(list, c)
	f.assertGone(c)
}

// addErr runs ADD through libcni for a fresh container and returns the CNI
// error it must fail with.
func (f *fixture) addErr(list *libcni.NetworkConfigList, id string) (*container, *types.Error) {
	f.t.Helper()
	c := &container{ns: testutil.NewNS(f.t)}
	c.rt = testutil.RT(id, c.ns, "eth0")
	_, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt)
	var e *types.Error
	if !errors.As(err, &e) {
		f.t.Fatalf("ADD %s: got %v, want a CNI error", id, err)
	}
	return c, e
}

// TestErrorsHostileTable: a table named like nswire's but made by someone
// else is replaced, and so is one that carries nswire's layout stamp but
// not its chains (a table is current only with its whole skeleton).
func TestErrorsHostileTable(t *testing.T) {
	for _, tc := range []struct{ name, chain, subnet string }{
		{"foreign", "mine", "10.65.0.0/24"},
		{"stamped", "layout-2", "10.66.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			for _, fam := range []string{"inet", "bridge"} {
				f.nft("add", "table", fam, "nswire")
				f.nft("add", "chain", fam, "nswire", tc.chain)
				f.nft("add", "rule", fam, "nswire", tc.chain, "counter")
			}
			list := f.list("1.1.0", nil, tc.subnet)
			c := f.add(list, tc.name)
			f.del(list, c)
		})
	}
}

// TestErrorsLeftovers: firewall elements whose network's record was
// flushed by hand stand in the way of an overlapping network (code 7); the
// set is named, and the kernel's answer once, not once per element.
func TestErrorsLeftovers(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.67.0.0/24")
	a := f.add(list, "a")
	f.nft("flush", "chain", "inet", "nswire", "networks")
	g := newFixture(t)
	g.host = f.host
	c, e := g.addErr(g.list("1.1.0", nil, "10.67.0.0/16"), "b")
	wantCode(t, "ADD", e, 7, "set inet nswire", "in the way")
	once(t, e, "file exists")
	g.assertGone(c)
	f.del(list, a)
}

// TestErrorsIPv6Disabled: IPv6 disabled where a dual-stack network needs
// it. In a container namespace (Docker makes them so) nswire enables it on
// the interface it gives IPv6; on the host it is the admin's setting
// against the network's ranges: code 7 naming the sysctl, not a refusal
// of privilege (the kernel answers EACCES).
func TestErrorsIPv6Disabled(t *testing.T) {
	subnets := []string{"10.68.0.0/24", "fd00:68::/64"}
	t.Run("container", func(t *testing.T) {
		f := newFixture(t)
		list := f.list("1.1.0", nil, subnets...)
		c := &container{ns: testutil.NewNS(t)}
		c.ns.Sysctl("net/ipv6/conf/all/disable_ipv6", "1")
		c.ns.Sysctl("net/ipv6/conf/default/disable_ipv6", "1")
		c.rt = testutil.RT("nov6", c.ns, "eth0")
		r, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt)
		if err != nil {
			t.Fatalf("ADD: %v", err)
		}
		c.res = testutil.Result(t, r)
		f.assertWired(c, 1500)
		f.del(list, c)
	})
	t.Run("host", func(t *testing.T) {
		f := newFixture(t)
		f.host.Sysctl("net/ipv6/conf/default/disable_ipv6", "1")
		c, e := f.addErr(f.list("1.1.0", nil, subnets...), "hostnov6")
		wantCode(t, "ADD", e, 7, "bridge", "disable_ipv6", "fd00:68::1/64")
		f.assertGone(c)
		if _, err := f.host.Handle().LinkByName(f.bridge); err == nil {
			t.Errorf("bridge %s outlived the refused ADD", f.bridge)
		}
	})
}

// TestErrorsRoutedAddressTaken: in routed mode, a host route that already
// sends the container's address elsewhere would take its traffic; ADD
// refuses it (code 7) naming the interface, instead of leaving it.
func TestErrorsRoutedAddressTaken(t *testing.T) {
	f := newFixture(t)
	h := f.host.Handle()
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "taken0"}, PeerName: "taken1"}
	if err := h.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(other); err != nil {
		t.Fatal(err)
	}
	// Every address IPAM may hand out first.
	for i := 1; i <= 4; i++ {
		dst := &net.IPNet{IP: net.IPv4(10, 69, 0, byte(i)), Mask: net.CIDRMask(32, 32)}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: other.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
	}
	c, e := f.addErr(f.list("1.1.0", map[string]any{"mode": "routed"}, "10.69.0.0/24"), "routed")
	wantCode(t, "ADD", e, 7, "already routes", `"taken0"`)
	f.assertGone(c)
}
