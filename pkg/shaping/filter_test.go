package shaping

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nswire/nswire/pkg/link"
	"github.com/nswire/nswire/pkg/testutil"
)

// filters lists the veth's ingress filters, failing the test on error.
func (p *pair) filters(t *testing.T) []netlink.Filter {
	t.Helper()
	l, err := p.hh.LinkByName(p.hostIf)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := listFilters(p.hh, l)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// expectRedirect fails unless the veth holds nswire's filter alone, with
// one action, redirecting to the ifb that exists now.
func (p *pair) expectRedirect(t *testing.T) {
	t.Helper()
	ifb, err := p.hh.LinkByName(IfbName(p.hostIf))
	if err != nil {
		t.Fatal(err)
	}
	fs := p.filters(t)
	if len(fs) != 1 || !isNswireFilter(fs[0]) {
		t.Fatalf("filters %v, want nswire's alone", describe(fs))
	}
	u := fs[0].(*netlink.U32)
	if len(u.Actions) != 1 || redirectDiff(u, ifb.Attrs().Index) != "" {
		t.Fatalf("filter %v, want one redirect to %s (%d)", describe(fs), ifb.Attrs().Name, ifb.Attrs().Index)
	}
}

func describe(fs []netlink.Filter) []string {
	var out []string
	for _, f := range fs {
		s := f.Type() + " " + filterID(f)
		if u, ok := f.(*netlink.U32); ok {
			for _, a := range u.Actions {
				if m, ok := a.(*netlink.MirredAction); ok {
					s += fmt.Sprintf(" mirred->%d", m.Ifindex)
				} else {
					s += " " + a.Type()
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// pinGateway gives the container a permanent neighbour entry for the
// host end (10.9.0.1).
func (p *pair) pinGateway(t *testing.T) {
	t.Helper()
	veth, err := p.hh.LinkByName(p.hostIf)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := netlink.NewHandleAt(netns.NsHandle(p.ctr.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	eth0, err := ch.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	n := &netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.IPv4(10, 9, 0, 1), HardwareAddr: veth.Attrs().HardwareAddr,
		State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}
	if err := ch.NeighSet(n); err != nil {
		t.Fatal(err)
	}
}

// expectMismatch fails unless err is a *link.Mismatch containing want.
func expectMismatch(t *testing.T, what string, err error, want string) {
	t.Helper()
	if !errors.As(err, new(*link.Mismatch)) || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: Check = %v, want a mismatch naming %q", what, err, want)
	}
	t.Logf("%s: %v", what, err)
}

// TestApplyAfterIfbDeleted: once the ifb is deleted, the redirect goes to
// a dead link and every frame the container sends is dropped. Check says
// so even when an ifb of the name is back, and Apply alone (the ingress
// qdisc kept) replaces the filter: traffic flows, shaped.
func TestApplyAfterIfbDeleted(t *testing.T) {
	p := newPair(t)
	const rate = 20e6
	l := Limits{EgressRate: rate, EgressBurst: 256e3}
	// The redirect to a dead ifb drops the container's ARP too: a fixed
	// neighbour keeps the resolution's retries out of what is measured.
	p.pinGateway(t)
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	p.expectRedirect(t)
	ifb, err := p.hh.LinkByName(IfbName(p.hostIf))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.hh.LinkDel(ifb); err != nil {
		t.Fatal(err)
	}
	expectMismatch(t, "ifb deleted", Check(p.hh, p.hostIf, l), "is missing")
	// An ifb of the name with its tbf, the filter left as it was.
	veth, _ := p.hh.LinkByName(p.hostIf)
	ifb, err = ensureIfb(p.hh, p.hostIf, veth.Attrs().MTU)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.hh.QdiscReplace(tbf(ifb.Attrs().Index, l.EgressRate, l.EgressBurst)); err != nil {
		t.Fatal(err)
	}
	expectMismatch(t, "ifb made again, filter stale", Check(p.hh, p.hostIf, l), "redirects to a deleted link")
	if _, err := testutil.Throughput(p.ctr, p.host, "10.9.0.1:5005", 0); err == nil {
		t.Fatal("the container's traffic went through a redirect to a deleted ifb")
	}

	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	if err := Check(p.hh, p.hostIf, l); err != nil {
		t.Fatalf("after Apply: %v", err)
	}
	p.expectRedirect(t)
	shaped(t, p.ctr, p.host, "10.9.0.1:5004", rate)

	// The same with the ifb gone: Apply makes it and replaces the filter.
	if err := p.hh.LinkDel(ifb); err != nil {
		t.Fatal(err)
	}
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	if err := Check(p.hh, p.hostIf, l); err != nil {
		t.Fatalf("after the ifb was deleted and Apply: %v", err)
	}
	p.expectRedirect(t)
}

// TestCheckFilters: Check fails, with a mismatch, for a redirect
// elsewhere and for any filter besides nswire's; Apply leaves nswire's
// alone again, even when the filter besides kept the u32 hash tables
// numbered past 800: after nswire's was deleted.
func TestCheckFilters(t *testing.T) {
	p := newPair(t)
	l := Limits{IngressRate: 1e6, IngressBurst: 1e5, EgressRate: 2e6, EgressBurst: 1e5}
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	veth, _ := p.hh.LinkByName(p.hostIf)
	ifb, _ := p.hh.LinkByName(IfbName(p.hostIf))
	idx := veth.Attrs().Index

	// nswire's filter redirecting to another link (the veth itself).
	if err := p.hh.FilterReplace(redirectFilter(idx, idx)); err != nil {
		t.Fatal(err)
	}
	expectMismatch(t, "redirect elsewhere", Check(p.hh, p.hostIf, l), "redirects to ifindex")
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	p.expectRedirect(t)

	// A second redirect, as Apply added before its handle was fixed.
	second := redirectFilter(idx, ifb.Attrs().Index)
	second.Handle = 0
	if err := p.hh.FilterAdd(second); err != nil {
		t.Fatal(err)
	}
	if n := len(p.filters(t)); n != 2 {
		t.Fatalf("%d filters, want 2", n)
	}
	expectMismatch(t, "second redirect", Check(p.hh, p.hostIf, l), "besides nswire's")
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	p.expectRedirect(t)
	if err := Check(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}

	// A filter at another preference, then nswire's deleted: the u32
	// filter left keeps the hash table ids, and nswire's next table is
	// 801:, where 800::800 cannot be.
	other := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: ingressParent,
		Priority: 2, Protocol: unix.ETH_P_ALL}, ClassId: netlink.MakeHandle(1, 2)}
	if err := p.hh.FilterAdd(other); err != nil {
		t.Fatal(err)
	}
	expectMismatch(t, "filter at another preference", Check(p.hh, p.hostIf, l), "besides nswire's")
	if err := p.hh.FilterDel(&netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: ingressParent,
		Priority: filterPrio, Protocol: unix.ETH_P_ALL}}); err != nil {
		t.Fatalf("delete preference 1: %v", err)
	}
	expectMismatch(t, "nswire's deleted", Check(p.hh, p.hostIf, l), "besides nswire's")
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	p.expectRedirect(t)
	if err := Check(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
}

// TestCheckLegacyFilter: a filter as Apply made it before (handle given
// by the kernel, the redirect twice) passes, and Apply replaces it.
func TestCheckLegacyFilter(t *testing.T) {
	p := newPair(t)
	l := Limits{EgressRate: 2e6, EgressBurst: 1e5}
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	veth, _ := p.hh.LinkByName(p.hostIf)
	ifb, _ := p.hh.LinkByName(IfbName(p.hostIf))
	if err := p.hh.QdiscDel(ingressQdisc(veth.Attrs().Index)); err != nil {
		t.Fatal(err)
	}
	if err := p.hh.QdiscAdd(ingressQdisc(veth.Attrs().Index)); err != nil {
		t.Fatal(err)
	}
	legacy := redirectFilter(veth.Attrs().Index, ifb.Attrs().Index)
	legacy.Handle, legacy.RedirIndex = 0, ifb.Attrs().Index
	if err := p.hh.FilterReplace(legacy); err != nil {
		t.Fatal(err)
	}
	fs := p.filters(t)
	if len(fs) != 1 || fs[0].Attrs().Handle != filterHandle || len(fs[0].(*netlink.U32).Actions) != 2 {
		t.Fatalf("legacy filter: %v, want one at 800::800 with two actions", describe(fs))
	}
	if err := Check(p.hh, p.hostIf, l); err != nil {
		t.Fatalf("legacy filter: %v", err)
	}
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	p.expectRedirect(t)
}

// TestCheckAll checks several host veths over one dump, as Check would.
func TestCheckAll(t *testing.T) {
	p := newPair(t)
	l := Limits{IngressRate: 1e6, IngressBurst: 1e5, EgressRate: 2e6, EgressBurst: 1e5}
	if err := Apply(p.hh, p.hostIf, l); err != nil {
		t.Fatal(err)
	}
	want := map[string]Limits{p.hostIf: l, "nswgone0": l}
	errs, err := CheckAll(p.hh, want)
	if err != nil {
		t.Fatal(err)
	}
	if errs[p.hostIf] != nil || len(errs) != 1 {
		t.Fatalf("CheckAll = %v, want only nswgone0", errs)
	}
	expectMismatch(t, "missing veth", errs["nswgone0"], "is missing")
	for _, other := range []Limits{{IngressRate: 1e6, IngressBurst: 1e5}, {IngressRate: 3e6, IngressBurst: 1e5, EgressRate: 2e6, EgressBurst: 1e5}} {
		errs, err := CheckAll(p.hh, map[string]Limits{p.hostIf: other})
		if err != nil {
			t.Fatal(err)
		}
		if cerr := Check(p.hh, p.hostIf, other); errs[p.hostIf] == nil || cerr == nil || errs[p.hostIf].Error() != cerr.Error() {
			t.Errorf("%+v: CheckAll %v, Check %v: want the same mismatch", other, errs[p.hostIf], cerr)
		}
	}
	// A redirect elsewhere, as Check finds it.
	veth, _ := p.hh.LinkByName(p.hostIf)
	if err := p.hh.FilterReplace(redirectFilter(veth.Attrs().Index, veth.Attrs().Index)); err != nil {
		t.Fatal(err)
	}
	errs, err = CheckAll(p.hh, map[string]Limits{p.hostIf: l})
	if err != nil {
		t.Fatal(err)
	}
	expectMismatch(t, "CheckAll, redirect elsewhere", errs[p.hostIf], "redirects to ifindex")
}
