package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/ident"
	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/testutil"
)

// execAdd runs the binary directly (as a runtime without libcni would) and
// decodes the CNI error it prints.
func execAdd(t *testing.T, f *fixture, env map[string]string, stdin []byte) *types.Error {
	t.Helper()
	full := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bad", "CNI_IFNAME": "eth0", "CNI_PATH": strings.Join(binDirs, ":")}
	for k, v := range env {
		if v == "" {
			delete(full, k)
		} else {
			full[k] = v
		}
	}
	var envList []string
	for k, v := range full {
		envList = append(envList, k+"="+v)
	}
	out, err := f.host.Exec(filepath.Join(binDirs[0], "nswire"), envList, stdin)
	if err == nil {
		t.Fatalf("ADD succeeded on bad input: %s", out)
	}
	var e types.Error
	if jerr := json.Unmarshal(out, &e); jerr != nil {
		t.Fatalf("error output is not a CNI error (%v): %q", jerr, out)
	}
	return &e
}

// TestBadInput: each bad input gets a CNI error with the right code and a
// message naming the culprit, and the host is left exactly as before.
func TestBadInput(t *testing.T) {
	type setup func(t *testing.T, f *fixture, cns *testutil.NS) (env map[string]string, stdin []byte)
	conf := func(f *fixture, extra map[string]any) []byte {
		p := f.plugin(extra, "10.30.0.0/24")
		p["cniVersion"] = "1.0.0"
		b, _ := json.Marshal(p)
		return b
	}
	cases := []struct {
		name  string
		code  uint
		words string
		setup setup
	}{
		{"malformed json", 6, "network config", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, []byte(`{"cniVersion":"1.0.0","name":"x","type":"nswire",`)
		}},
		{"wrong type", 6, `"mtu"`, func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"mtu": "big"})
		}},
		{"bridge name too long", 7, "bridge", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"bridge": "a-much-too-long-bridge"})
		}},
		{"bridge name with slash", 7, "bridge", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"bridge": "br/0"})
		}},
		{"unknown mode", 7, "mode", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"mode": "sideways"})
		}},
		{"mtu out of range", 7, "mtu", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"mtu": 20})
		}},
		{"bad mac", 7, "mac", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"args": map[string]any{"cni": map[string]any{"mac": "01:00:5e:00:00:01"}}})
		}},
		{"network name with path", 7, "name", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"name": "../etc"})
		}},
		{"missing ipam", 7, "ipam.type", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"ipam": map[string]any{}})
		}},
		{"ipam not in CNI_PATH", 4, "no-such-ipam", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return nil, conf(f, map[string]any{"ipam": map[string]any{"type": "no-such-ipam"}})
		}},
		{"missing CNI_CONTAINERID", 4, "CNI_CONTAINERID", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			return map[string]string{"CNI_CONTAINERID": ""}, conf(f, nil)
		}},
		{"netns is a plain file", 4, "CNI_NETNS", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			p := filepath.Join(t.TempDir(), "not-a-netns")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return map[string]string{"CNI_NETNS": p}, conf(f, nil)
		}},
		{"ifname already in container", 4, "eth0", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1"}
			if err := cns.Handle().LinkAdd(veth); err != nil {
				t.Fatal(err)
			}
			return nil, conf(f, nil)
		}},
		{"bridge name taken by a veth", 7, "not a bridge", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: f.bridge}, PeerName: f.bridge + "p"}
			if err := f.host.Handle().LinkAdd(veth); err != nil {
				t.Fatal(err)
			}
			return nil, conf(f, nil)
		}},
		{"bridge holds a conflicting address", 7, "conflicts", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: f.bridge}}
			if err := f.host.Handle().LinkAdd(br); err != nil {
				t.Fatal(err)
			}
			addr, _ := netlink.ParseAddr("10.30.0.200/24")
			if err := f.host.Handle().AddrAdd(br, addr); err != nil {
				t.Fatal(err)
			}
			return nil, conf(f, nil)
		}},
		{"host veth name taken by a foreign link", 4, "cannot be replaced", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			name := link.HostVethName(ident.Attachment{Network: f.name, ContainerID: "bad", IfName: "eth0"})
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: testutil.Name("peer")}
			if err := f.host.Handle().LinkAdd(veth); err != nil {
				t.Fatal(err)
			}
			return nil, conf(f, nil)
		}},
		{"unreachable route gateway (fails after veth)", 7, "ipam.routes", func(t *testing.T, f *fixture, cns *testutil.NS) (map[string]string, []byte) {
			ipam := f.ipamConf("10.30.0.0/24")
			ipam["routes"] = []any{map[string]any{"dst": "10.31.0.0/16", "gw": "172.31.255.1"}}
			return nil, conf(f, map[string]any{"ipam": ipam})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			cns := testutil.NewNS(t)
			env, stdin := tc.setup(t, f, cns)
			if env == nil {
				env = map[string]string{}
			}
			if _, ok := env["CNI_NETNS"]; !ok {
				env["CNI_NETNS"] = cns.Path()
			}
			hostBefore, contBefore := f.host.Snapshot(), cns.Snapshot()
			e := execAdd(t, f, env, stdin)
			if e.Code != tc.code || !strings.Contains(e.Msg+e.Details, tc.words) {
				t.Errorf("got code %d %q (%s), want code %d naming %q", e.Code, e.Msg, e.Details, tc.code, tc.words)
			}
			if after := f.host.Snapshot(); after != hostBefore {
				t.Errorf("host changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
			}
			if after := cns.Snapshot(); after != contBefore {
				t.Errorf("container changed:\nbefore:\n%s\nafter:\n%s", contBefore, after)
			}
			if r := f.reservations(); r != 0 {
				t.Errorf("%d IPAM reservations left behind", r)
			}
		})
	}
}

// TestRepairsStaleHostEnd: a host veth of the same identity left by a lost
// DEL is ours, so a new ADD replaces it.
func TestRepairsStaleHostEnd(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.32.0.0/24")
	old := f.add(list, "stale")
	// Simulate a runtime that lost the container without DEL: move the
	// container end elsewhere, keep the host end.
	// ...and lose its IPAM state too (an admin wiped the directory).
	if err := os.RemoveAll(filepath.Join(f.host.DataDir, f.name)); err != nil {
		t.Fatal(err)
	}
	other := testutil.NewNS(t)
	eth := old.ns.Link("eth0")
	if err := old.ns.Handle().LinkSetNsFd(eth, int(other.Fd())); err != nil {
		t.Fatal(err)
	}
	c := &container{ns: testutil.NewNS(t)}
	c.rt = testutil.RT("stale", c.ns, "eth0")
	if _, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt); err != nil {
		t.Fatalf("ADD over a stale host end: %v", err)
	}
	f.del(list, c)
}

// TestStoreRemovedWhileLive: an admin removes the network's IPAM directory
// while containers live. DEL, CHECK and STATUS meanwhile must not make a
// fresh store, and the next ADD gives the live container its address back
// instead of handing it out again.
func TestStoreRemovedWhileLive(t *testing.T) {
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.34.0.0/29")
	a := f.add(list, "a")
	b := f.add(list, "b")
	store := filepath.Join(f.host.DataDir, f.name)
	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	f.del(list, b)
	if err := f.host.CNI.CheckNetworkList(context.Background(), list, a.rt); err == nil {
		t.Error("CHECK passed without a reservation")
	}
	if err := f.host.CNI.GetStatusNetworkList(context.Background(), list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("DEL, CHECK or STATUS made a new store: %v", err)
	}
	c := f.add(list, "c")
	if got, held := c.res.IPs[0].Address.IP, a.res.IPs[0].Address.IP; got.Equal(held) {
		t.Fatalf("ADD handed out %s, which a live container holds", got)
	}
	if err := f.host.CNI.CheckNetworkList(context.Background(), list, a.rt); err != nil {
		t.Errorf("CHECK of the live container after the store was rebuilt: %v", err)
	}
	f.del(list, a)
	f.del(list, c)
}

// A bridge holds at most 1,023 ports. The ADD that finds it full fails with
// "try again later" naming the bridge, and leaves nothing behind.
func TestFullBridge(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	list := f.list("1.1.0", nil, "10.30.0.0/16")
	first := f.add(list, "first") // creates the bridge
	h := f.host.Handle()
	br := f.host.Link(f.bridge)
	for i := 2; i <= 1023; i++ {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("fill%d", i), MasterIndex: br.Attrs().Index},
			PeerName: fmt.Sprintf("fillp%d", i)}
		if err := h.LinkAdd(v); err != nil {
			t.Fatalf("port %d: %v", i, err)
		}
	}
	before := f.reservations()
	c := &container{ns: testutil.NewNS(t)}
	c.rt = testutil.RT("late", c.ns, "eth0")
	_, err := f.host.CNI.AddNetworkList(context.Background(), list, c.rt)
	cniErr(t, err, types.ErrTryAgainLater)
	if !strings.Contains(err.Error(), f.bridge) {
		t.Errorf("error does not name the bridge %s: %v", f.bridge, err)
	}
	if got := f.reservations(); got != before {
		t.Errorf("%d reservations after the failed ADD, want %d", got, before)
	}
	f.assertGone(c)
	if links := c.ns.Links(); len(links) != 1 {
		t.Errorf("container holds %v after the failed ADD, want only lo", links)
	}
	f.del(list, first)
}
