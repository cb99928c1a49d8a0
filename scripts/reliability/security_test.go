package reliability

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/nswire/nswire/pkg/shaping"
	"github.com/nswire/nswire/pkg/testutil"
)

// TestHostileNamesRejected: network names, container IDs and interface
// names that would traverse paths, are too long or carry control
// characters are refused with a CNI error before any file or link is
// touched: host and container snapshots, the dataDir's parent tree and
// the live container are unchanged, for ADD, CHECK and DEL (DEL may also
// succeed, as long as it touches nothing).
func TestHostileNamesRejected(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	n := r.newNetwork(false, "10.85.0.0/24")
	reg := &registry{}
	r.tidy(func() []*network { return []*network{n} }, reg)
	live := &att{net: n, id: "live", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
	r.mustAdd(live)
	reg.put(live)
	parent := filepath.Dir(n.dataDir)

	cases := []struct {
		field, value string
	}{
		{"name", "../escape"},
		{"name", "a/b"},
		{"name", ".."},
		{"name", "net\x01"},
		{"name", "net\nx"},
		{"name", strings.Repeat("n", 101)},
		{"containerID", "../../escape"},
		{"containerID", "a/b"},
		{"containerID", ".."},
		{"containerID", "c\x01d"},
		{"containerID", "c\nd"},
		{"containerID", strings.Repeat("c", 300)}, // the link alias holds at most 255 bytes
		{"containerID", strings.Repeat("c", 2000)},
		{"ifname", "../x"},
		{"ifname", "a/b"},
		{"ifname", ".."},
		{"ifname", "e\x01"},
		{"ifname", "e\x7f"},
		{"ifname", "eth0:1"},
		{"ifname", "e th"},
		{"ifname", strings.Repeat("e", 16)},
	}
	for _, tc := range cases {
		a := &att{net: n, id: "hostile", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{"portMappings": ports(9100, 80)}}
		nw := *n
		nw.conf = map[string]any{}
		for k, v := range n.conf {
			nw.conf[k] = v
		}
		a.net = &nw
		switch tc.field {
		case "name":
			nw.name = tc.value
			nw.conf["name"] = tc.value
		case "containerID":
			a.id = tc.value
		case "ifname":
			a.ifname = tc.value
		}
		a.raw, _ = json.Marshal(map[string]any{"cniVersion": "1.1.0"})
		for _, c := range []call{r.addCall(a), r.checkCall(a), r.delCall(a)} {
			hostBefore, ctrBefore, treeBefore := r.host.Snapshot(), a.ns.Snapshot(), listTree(t, parent)
			_, err := r.run(c)
			what := c.verb + " with " + tc.field + " " + strconvQuote(tc.value)
			var e *types.Error
			switch {
			case err == nil && c.verb == "DEL":
				// DEL of what cannot exist may succeed, touching nothing.
			case err == nil:
				t.Errorf("%s succeeded", what)
				if c.verb == "ADD" {
					_, _ = r.run(r.delCall(a))
				}
			case !asCNI(err, &e):
				t.Errorf("%s: not a CNI error (panic?): %v", what, err)
			case e.Code != types.ErrUnknownContainer && e.Code != types.ErrInvalidEnvironmentVariables &&
				e.Code != types.ErrInvalidNetworkConfig && e.Code != types.ErrDecodingFailure:
				t.Errorf("%s: code %d (%s), want 3, 4, 6 or 7: the input must be refused before any side effect", what, e.Code, e.Msg)
			}
			if after := r.host.Snapshot(); after != hostBefore {
				t.Errorf("%s: host changed:\nbefore:\n%s\nafter:\n%s", what, hostBefore, after)
			}
			if after := a.ns.Snapshot(); after != ctrBefore {
				t.Errorf("%s: container changed:\nbefore:\n%s\nafter:\n%s", what, ctrBefore, after)
			}
			if after := listTree(t, parent); after != treeBefore {
				t.Errorf("%s: files changed:\nbefore:\n%s\nafter:\n%s", what, treeBefore, after)
			}
		}
	}
	r.assertExactly([]*network{n}, []*att{live})
	if err := r.check(live); err != nil {
		t.Errorf("live container after the hostile calls: %v", err)
	}
	r.mustDel(live)
	reg.drop(live)
	r.assertExactly([]*network{n}, nil)
	r.host.AssertNoLeaks()
}

func strconvQuote(s string) string {
	if len(s) > 40 {
		return strings.TrimSuffix(jsonString(s[:40]), `"`) + `..." (` + itoa(len(s)) + ` bytes)`
	}
	return jsonString(s)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func asCNI(err error, e **types.Error) bool {
	te, ok := err.(*types.Error)
	*e = te
	return ok
}

// TestFileModes: with umask 0, every directory nswire creates (the
// dataDir itself included) is 0700 and every file (IPAM lock, reservations,
// cursor, index, log) is 0600: nothing readable by other users.
func TestFileModes(t *testing.T) {
	r := newRig(t)
	n := r.newNetwork(false, "10.86.0.0/24", "fd86::/64")
	dataDir := filepath.Join(r.host.DataDir, "created", "by", "nswire")
	n.dataDir = dataDir
	n.conf["ipam"].(map[string]any)["dataDir"] = dataDir
	logDir := t.TempDir()
	logFile := filepath.Join(logDir, "nswire.log")
	n.conf["logFile"] = logFile
	reg := &registry{}
	r.tidy(func() []*network { return []*network{n} }, reg)
	a := &att{net: n, id: "modes", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
	old := syscall.Umask(0)
	err := r.add(a)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	reg.put(a)
	checked := 0
	err = filepath.Walk(filepath.Join(r.host.DataDir, "created"), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		checked++
		want := os.FileMode(0o600)
		if info.IsDir() {
			want = os.ModeDir | 0o700
		}
		if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, info.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(logFile); err != nil {
		t.Errorf("log file: %v", err)
	} else if info.Mode() != 0o600 {
		t.Errorf("log file %s: mode %v, want 0600", logFile, info.Mode())
	}
	if checked < 6 {
		t.Errorf("only %d entries under the dataDir: layout changed?", checked)
	}
	r.mustDel(a)
	reg.drop(a)
	r.assertExactly([]*network{n}, nil)
	r.host.AssertNoLeaks()
}

// TestForeignLinksSurvive: DEL and GC never delete a host link without
// nswire's marker for that very attachment, even one named like nswire's
// veths or ifbs, or marked for another network, or malformed.
func TestForeignLinksSurvive(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	n := r.newNetwork(false, "10.87.0.0/24")
	reg := &registry{}
	r.tidy(func() []*network { return []*network{n} }, reg)
	live := &att{net: n, id: "live", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{"bandwidth": fastBandwidth}}
	r.mustAdd(live)
	reg.put(live)
	victim := &att{net: n, id: "victim", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{"bandwidth": fastBandwidth}}

	foreign := map[string]string{ // name -> alias
		victim.hostVeth():                  "",                                  // the victim's derived name, no marker
		shaping.IfbName(victim.hostVeth()): "",                                  // its ifb's name, no marker
		"nsw0123456789ab":                  "",                                  // nswire-looking, no marker
		"nsw0123456789ac":                  "nswire/" + n.name + "x/live/eth0",  // another network whose name extends ours
		"nsw0123456789ad":                  "nswire/other/victim/eth0",          // another network
		"nsw0123456789ae":                  "nswire/" + n.name + "/a/b/c",       // malformed marker
		"nsw0123456789af":                  "nswire-" + n.name + "/victim/eth0", // not the marker prefix
		shaping.IfbName("nsw0123456789ab"): "nswire-shaping/nsw0123456789ab",    // marker of a link that is not nswire's
	}
	for name, alias := range foreign {
		var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: testutil.Name("peer")}
		if strings.HasPrefix(name, "nsi") {
			l = &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}
		}
		if err := r.host.Handle().LinkAdd(l); err != nil {
			t.Fatalf("foreign %s: %v", name, err)
		}
		if alias != "" {
			if err := r.host.Handle().LinkSetAlias(l, alias); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { forceDel(r, name) })
	}
	before := r.host.Snapshot()
	if _, err := r.run(r.delCall(victim)); err != nil {
		t.Logf("DEL of an attachment whose derived names are taken by foreign links: %v", err)
		var e *types.Error
		if !asCNI(err, &e) {
			t.Errorf("DEL failed without a CNI error: %v", err)
		}
	}
	if _, err := r.run(r.gcCall(n, []*att{live})); err != nil {
		t.Errorf("GC: %v", err)
	}
	if after := r.host.Snapshot(); after != before {
		t.Errorf("DEL/GC changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for name, alias := range foreign {
		l, err := r.host.Handle().LinkByName(name)
		if err != nil {
			t.Errorf("foreign link %s (alias %q) was deleted", name, alias)
		} else if l.Attrs().Alias != alias {
			t.Errorf("foreign link %s: alias changed to %q", name, l.Attrs().Alias)
		}
	}
	if err := r.check(live); err != nil {
		t.Errorf("live container: %v", err)
	}
	r.mustDel(live)
	reg.drop(live)
	for name := range foreign {
		forceDel(r, name)
	}
	r.assertExactly([]*network{n}, nil)
	r.host.AssertNoLeaks()
}
