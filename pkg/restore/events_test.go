package restore

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/testutil"
)

// nftMsg builds a notification of type msg about table (family fam).
func nftMsg(t *testing.T, msg uint16, fam byte, attrs ...netlink.Attribute) netlink.Message {
	t.Helper()
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg)},
		Data:   append([]byte{fam, 0, 0, 0}, b...),
	}
}

func table(name string) netlink.Attribute {
	return netlink.Attribute{Type: 1, Data: append([]byte(name), 0)}
}

func gen(t *testing.T, pid uint32, comm string) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint32(unix.NFTA_GEN_ID, 7)
	ae.Uint32(unix.NFTA_GEN_PROC_PID, pid)
	ae.String(unix.NFTA_GEN_PROC_NAME, comm)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)},
		Data:   append([]byte{unix.AF_UNSPEC, 0, 0, 0}, b...),
	}
}

// TestNftEventsJudge: a transaction counts when it removed something from
// a table named nswire (inet or bridge) and nswire did not commit it; an
// nswire table deleted counts even from nswire, never from this process.
func TestNftEventsJudge(t *testing.T) {
	const self = 4242
	cases := []struct {
		name string
		msgs []netlink.Message
		pid  uint32
		comm string
		want bool
	}{
		{"flush by nft", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, table("nswire"))}, 10, "nft", true},
		{"bridge table deleted by firewalld", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELTABLE, unix.NFPROTO_BRIDGE, table("nswire"))}, 10, "firewalld", true},
		{"destroy chain", []netlink.Message{nftMsg(t, nftMsgDestroyChain, unix.NFPROTO_INET, table("nswire"))}, 10, "nft", true},
		{"another table", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, table("other"))}, 10, "nft", false},
		{"nswire in the ip family", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELTABLE, unix.NFPROTO_IPV4, table("nswire"))}, 10, "nft", false},
		{"additions only", []netlink.Message{nftMsg(t, unix.NFT_MSG_NEWSETELEM, unix.NFPROTO_INET, table("nswire"))}, 10, "nft", false},
		{"DEL of the plugin", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELSETELEM, unix.NFPROTO_INET, table("nswire"))}, 10, "nswire", false},
		{"the agent", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELCHAIN, unix.NFPROTO_BRIDGE, table("nswire"))}, 10, "nswire-agent", false},
		{"ADD rebuilding a table", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELRULE, unix.NFPROTO_INET, table("nswire")),
			nftMsg(t, unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, table("nswire"))}, 10, "nswire", true},
		{"this process rebuilding", []netlink.Message{nftMsg(t, unix.NFT_MSG_DELTABLE, unix.NFPROTO_INET, table("nswire"))}, self, "restore.test", false},
	}
	for _, tc := range cases {
		e := &nftEvents{own: func(pid uint32) bool { return pid == self }}
		for _, m := range tc.msgs {
			if why := e.handle(m); why != "" {
				t.Errorf("%s: a pass before the transaction ended: %s", tc.name, why)
			}
		}
		why := e.handle(gen(t, tc.pid, tc.comm))
		if (why != "") != tc.want {
			t.Errorf("%s: pass %q, want %v", tc.name, why, tc.want)
		}
		if why := e.handle(gen(t, 10, "nft")); why != "" {
			t.Errorf("%s: the next, empty transaction counts: %s", tc.name, why)
		}
	}
}

// TestNewGenNamesCommitter checks on this kernel what the watcher relies
// on: a transaction's notifications come before its NFT_MSG_NEWGEN, which
// names the committing thread (a thread of this process for our own
// commits) and its comm.
func TestNewGenNamesCommitter(t *testing.T) {
	host := testutil.NewNS(t)
	c, err := listen(unix.NETLINK_NETFILTER, int(host.Fd()), unix.NFNLGRP_NFTABLES)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 16)
	asked := make(chan bool, 16) // ownThread's answers
	e := &nftEvents{own: func(pid uint32) bool {
		ok := ownThread(pid)
		asked <- ok
		return ok
	}}
	go func() {
		_ = read(c, e.handle, func(why string) { got <- why })
		close(got)
	}()
	// Ours: made by this process, ignored even when it deletes a table.
	nc, err := nftables.New(nftables.WithNetNSFd(int(host.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tb := nc.AddTable(&nftables.Table{Name: "nswire", Family: nftables.TableFamilyINet})
	nc.AddChain(&nftables.Chain{Table: tb, Name: "x"})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	nc.DelTable(tb)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case why := <-got:
		t.Fatalf("this process's own transaction counted: %s", why)
	case ok := <-asked:
		if !ok {
			t.Fatal("NFTA_GEN_PROC_PID of our own commit is not a thread of this process")
		}
	case <-time.After(time.Second):
		t.Fatal("our own table deletion was not announced")
	}
	// Another process's: counted, naming it.
	nc.AddTable(tb)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	err = host.Do(func(ns.NetNS) error {
		out, err := exec.Command("nft", "delete", "table", "inet", "nswire").CombinedOutput()
		if err != nil {
			t.Logf("%s", out)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case why := <-got:
		if !strings.Contains(why, "table deleted in table inet nswire by nft (pid ") {
			t.Errorf("reason %q does not name nft", why)
		}
	case <-time.After(time.Second):
		t.Fatal("nft's deletion did not count")
	}
}

// TestFindNetworks reads networks as runtimes do: conflists and single
// configs, nswire plugins only, each with its dataDir; a broken file is a
// warning.
func TestFindNetworks(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"10-a.conflist": `{"cniVersion":"1.1.0","name":"a","plugins":[{"type":"nswire","ipam":{"type":"nswire-ipam","dataDir":"/tmp/da"}},{"type":"portmap"}]}`,
		"20-b.conf":     `{"cniVersion":"1.0.0","name":"b","type":"nswire","ipam":{"type":"host-local"}}`,
		"30-c.json":     `{"cniVersion":"1.0.0","name":"c","type":"bridge","ipam":{"type":"host-local"}}`,
		"40-bad.conf":   `{`,
		"50-a.conflist": `{"cniVersion":"1.1.0","name":"a","plugins":[{"type":"nswire","ipam":{"type":"dhcp"}}]}`,
		"notes.txt":     `{"name":"z","type":"nswire"}`,
	}
	for name, body := range files {
		if err := os.WriteFile(dir+"/"+name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nets, warnings, err := findNetworks(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range nets {
		got[n.name] = strings.Join(n.dirs, ",")
	}
	want := map[string]string{
		"a": "/tmp/da/.nswire-intents/a,/var/lib/cni/networks/.nswire-intents/a",
		"b": "/var/lib/cni/networks/.nswire-intents/b",
	}
	if len(got) != len(want) || got["a"] != want["a"] || got["b"] != want["b"] {
		t.Errorf("networks %v, want %v", got, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "40-bad.conf") {
		t.Errorf("warnings %q, want one naming 40-bad.conf", warnings)
	}
	if nets, _, err := findNetworks(dir + "/missing"); err != nil || len(nets) != 0 {
		t.Errorf("missing conf dir: %v, %v", nets, err)
	}
}

// TestRestoreWithoutNetworks: a host without nswire networks costs a
// directory read and opens nothing, in Watch too (it stops with ctx).
func TestRestoreWithoutNetworks(t *testing.T) {
	r, err := Restore(context.Background(), Options{ConfDir: t.TempDir()})
	if err != nil || r.Live != 0 || r.Repaired() {
		t.Errorf("Restore = %+v, %v", r, err)
	}
}
