package reliability

import (
	"fmt"
	"time"

	"testing"

	"github.com/nswire/nswire/pkg/shaping"
	"github.com/nswire/nswire/pkg/testutil"
)

// The tests in this file rebuild, deterministically, host states that
// TestCrashAnywhere produces with SIGKILL at unlucky instants, then run
// the runtime's recovery. Each documents one bug.

// crashWindowRig is a bridge network with one live container (so the
// bridge exists) and a victim attachment.
func crashWindowRig(t *testing.T) (*rig, *network, *att, *att) {
	r := newRig(t)
	n := r.newNetwork(false, "10.78.0.0/24")
	reg := &registry{}
	r.tidy(func() []*network { return []*network{n} }, reg)
	live := &att{net: n, id: "live", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{}}
	r.mustAdd(live)
	reg.put(live)
	v := &att{net: n, id: "victim", ifname: "eth0", ns: testutil.NewNS(t), rc: map[string]any{"bandwidth": fastBandwidth}}
	reg.put(v)
	return r, n, live, v
}

// killAddAtLink runs ADD of a and SIGKILLs it the instant the host link
// `name` appears. It reports whether the kill landed in the window this
// file is about: the link exists without its alias.
func killAddAtLink(t *testing.T, r *rig, tr *linkTrigger, a *att, name string) bool {
	t.Helper()
	p, err := r.start(r.addCall(a))
	if err != nil {
		t.Fatal(err)
	}
	tr.arm(name, p.cmd.Process)
	done := make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	fired := tr.disarm()
	l, err := r.host.Handle().LinkByName(name)
	return fired && err == nil && l.Attrs().Alias == ""
}

// reproduce kills ADDs of fresh identities at the appearance of the link
// named by target until one dies before the link is marked (usually the
// first: the alias is a second netlink request). Identities where the
// kill came too late are DELeted again.
func reproduce(t *testing.T, r *rig, n *network, rc map[string]any, target func(*att) string) *att {
	t.Helper()
	tr := &linkTrigger{}
	tr.watch(t, r.host.NS)
	for i := 0; i < 30; i++ {
		a := &att{net: n, id: fmt.Sprintf("victim%d", i), ifname: "eth0", ns: testutil.NewNS(t), rc: rc}
		if killAddAtLink(t, r, tr, a, target(a)) {
			t.Logf("attempt %d: ADD killed with %s present and unmarked", i, target(a))
			return a
		}
		if _, err := r.run(r.delCall(a)); err != nil {
			t.Fatalf("DEL after a kill outside the window: %v", err)
		}
	}
	return nil
}

// TestKilledAddLeavesUnmarkedVeth: ADD creates the veth pair in one
// RTM_NEWLINK and sets the ownership alias in a second request
// (pkg/link/veth.go CreateVeth). Killed in between, the host end exists,
// up and enslaved, with no alias and its peer in the container. The
// runtime's recovery is DEL: it must remove both ends, and a new ADD of
// the same identity must then work.
func TestKilledAddLeavesUnmarkedVeth(t *testing.T) {
	r, n, live, _ := crashWindowRig(t)
	v := reproduce(t, r, n, map[string]any{}, (*att).hostVeth)
	if v == nil {
		t.Log("no kill landed between creation and marking in 30 attempts")
	} else {
		if _, err := r.run(r.delCall(v)); err != nil {
			t.Errorf("recovery DEL of the half-made attachment: %v", err)
		}
		if err := onlyLo(v.ns); err != nil {
			t.Errorf("after DEL: %v", err)
		}
		if err := r.add(v); err != nil {
			t.Errorf("ADD of the same identity after DEL: %v", err)
		} else {
			r.mustDel(v)
		}
		forceDel(r, v.hostVeth())
	}
	r.assertExactly([]*network{n}, []*att{live})
}

// TestKilledAddLeavesUnmarkedIfb: shaping creates the ifb, then sets its
// alias in a second request (pkg/shaping ensureIfb). Killed in between
// (after the veth, IPAM and firewall steps), the ifb has no alias: DEL
// skips it silently and every later ADD of the identity with bandwidth
// fails with "exists and is not nswire's".
func TestKilledAddLeavesUnmarkedIfb(t *testing.T) {
	r, n, live, _ := crashWindowRig(t)
	ifbOf := func(a *att) string { return shaping.IfbName(a.hostVeth()) }
	v := reproduce(t, r, n, map[string]any{"bandwidth": fastBandwidth}, ifbOf)
	if v == nil {
		t.Log("no kill landed between creation and marking in 30 attempts")
	} else {
		if _, err := r.run(r.delCall(v)); err != nil {
			t.Errorf("recovery DEL: %v", err)
		}
		if _, err := r.host.Handle().LinkByName(ifbOf(v)); err == nil {
			t.Errorf("DEL left the half-made ifb %s behind", ifbOf(v))
		}
		if err := r.add(v); err != nil {
			t.Errorf("ADD of the same identity after DEL: %v", err)
		} else {
			r.mustDel(v)
		}
		forceDel(r, ifbOf(v))
	}
	r.assertExactly([]*network{n}, []*att{live})
}

// TestGCLeavesOrphanIfb: GC deletes a stale host veth, then its shaping
// (pkg/plugin/gc.go gcLinks). Killed in between — or whenever the veth is
// already gone, e.g. its container namespace was destroyed — the ifb
// (alias nswire-shaping/<veth>) is no longer reachable from any marked
// veth, and no later GC removes it.
func TestGCLeavesOrphanIfb(t *testing.T) {
	r, n, live, v := crashWindowRig(t)
	r.mustAdd(v)
	if err := r.host.Handle().LinkDel(r.host.Link(v.hostVeth())); err != nil {
		t.Fatal(err)
	}
	if _, err := r.run(r.gcCall(n, []*att{live})); err != nil {
		t.Errorf("GC: %v", err)
	}
	ifb := shaping.IfbName(v.hostVeth())
	if _, err := r.host.Handle().LinkByName(ifb); err == nil {
		t.Errorf("GC left ifb %s of the stale attachment %s", ifb, v)
	}
	forceDel(r, ifb)
	r.assertExactly([]*network{n}, []*att{live})
}

// forceDel removes a link the way an admin would, so that a failing test
// still ends with a clean host.
func forceDel(r *rig, name string) {
	if l, err := r.host.Handle().LinkByName(name); err == nil {
		_ = r.host.Handle().LinkDel(l)
	}
}
