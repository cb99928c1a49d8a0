package testutil

// The kubelet settings a test node needs on this kind of machine (Debian 12,
// hybrid cgroup v1, no systemd, containerd 1.6), and why. "Needed" means
// the test breaks or the machine is touched without it; "explicit" means
// the 1.34 default already fits but a version bump or another machine
// would not.
//
//   - cgroupRoot /<Name("kubelet")> (needed): the default "/" puts kubepods
//     and every pod's cgroup into the machine's /kubepods. The kubelet
//     validates that it exists: created beforehand in every hierarchy,
//     removed at cleanup with whatever is left in it.
//   - makeIPTablesUtilChains false (needed): the default adds
//     KUBE-IPTABLES-HINT, KUBE-FIREWALL (drops non-loopback traffic to 127/8,
//     sets route_localnet) and a canary monitor; false runs no iptables.
//   - authentication webhook off, authorization AlwaysAllow (needed): the
//     defaults (webhook, Webhook) send a TokenReview and a
//     SubjectAccessReview per request; only the API server can reach its port
//     (random, on NodeIP inside the node namespace). anonymous off (explicit).
//   - readOnlyPort 0, healthz on a random port of 127.0.0.1 (needed): the
//     fixed 10250/10248 would collide between kubelets; no read-only API.
//   - podLogsDir, volumePluginDir, --root-dir, --cert-dir private (needed):
//     the defaults are /var/log/pods, /usr/libexec/kubernetes/kubelet-plugins,
//     /var/lib/kubelet and /var/lib/kubelet/pki.
//   - --node-ip (needed): an address of the node namespace; it refuses
//     loopback. --hostname-override: the Node's name, as the cert names it.
//   - cgroupDriver cgroupfs (explicit): no systemd, and containerd's runc has
//     SystemdCgroup = false. The kubelet would ask the runtime, but
//     containerd 1.6 does not implement CRI RuntimeConfig (it logs
//     Unimplemented) and the config is used.
//   - failCgroupV1 false (explicit): the 1.34 default only warns on cgroup
//     v1; later releases refuse it.
//   - failSwapOn false (explicit): no swap here; CI machines may have some.
//   - evictionHard with every signal at 0% (explicit): 0% disables a
//     signal, and with MergeDefaultEvictionSettings off no default is added;
//     a full test disk (defaults: nodefs 10%, imagefs 15%) would otherwise
//     evict the pods under test.
//   - imageGCHighThresholdPercent 100, low 99 (explicit): image GC never
//     runs, so the imported pause image (imagePullPolicy Never) stays.
//   - maxOpenFiles: the inherited hard limit (20000 here); the kubelet sets
//     its own to this, and the default 1000000 fails (an error line only).
//   - registerNode true, no staticPodPath (explicit): it adopts the Node the
//     test made (with its pod CIDR); no static pods.
//
// Harmless errors it logs here: "Failed to ensure process in container with
// oom score" (it cannot read init's pid namespace), "no imagefs label for
// configured runtime" (containerd 1.6).
//
// What it still does to the machine, and how it is undone:
//   - sysctls (container_manager_linux.go setupKernelTunables):
//     vm.overcommit_memory=1, vm.panic_on_oom=0, kernel.panic=10,
//     kernel.panic_on_oops=1, kernel.keys.root_maxkeys=1000000,
//     kernel.keys.root_maxbytes=25000000. Saved when the first kubelet
//     starts, restored when the last one stops. (protectKernelDefaults
//     would make it fail instead, unless the machine already had them.)
//   - /var/log/containers: hard-coded, made at start, one symlink per
//     container. Cleanup removes this kubelet's symlinks, and the directory
//     with the last kubelet if it did not exist before the first. A private mount namespace with a tmpfs
//     there does not fit: this machine's mounts are private, so it would
//     keep a copy of every netns bind mount of the moment (other tests'
//     namespaces) alive until the kubelet ends.
//   - a bind mount of --root-dir onto itself, made rshared; unmounted at
//     cleanup with anything else below the directory, deepest first.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// KubeletOptions says where a kubelet runs and what it talks to.
type KubeletOptions struct {
	Host          *Host  // the node's namespace; the kubelet runs in it
	NodeName      string // the Node's name, as the kubeconfig's cert names it
	NodeIP        string // an address of Host (not loopback)
	Kubeconfig    string // see ControlPlane.KubeletKubeconfig
	RuntimeSocket string // containerd's CRI socket
}

// Kubelet is a real kubelet with private state, stopped and removed when
// the test ends, with the machine's sysctls restored.
type Kubelet struct {
	Dir        string // config, root dir, certs, pod logs, log
	CgroupRoot string // its cgroupRoot, in every hierarchy
	Port       int    // its API on NodeIP
	healthz    int    // its /healthz on 127.0.0.1 of Host
	held       bool   // counted in machine
	opts       KubeletOptions
	proc       *proc
	t          T
}

// StartKubelet starts a kubelet (K8sTool "kubelet") and waits until its
// /healthz answers. Registration and readiness are the Node's business.
func StartKubelet(t T, o KubeletOptions) *Kubelet {
	t.Helper()
	requireRoot(t)
	bin, err := K8sTool("kubelet")
	if err != nil {
		t.Fatalf("%v", err)
	}
	dir, err := os.MkdirTemp("", "nswire-kubelet")
	if err != nil {
		t.Fatalf("kubelet dir: %v", err)
	}
	k := &Kubelet{Dir: dir, CgroupRoot: "/" + Name("kubelet"), opts: o, t: t}
	t.Cleanup(k.remove)
	if err := holdHost(); err != nil {
		t.Fatalf("save the machine's sysctls: %v", err)
	}
	k.held = true
	start := time.Now()
	k.prepare()
	args := []string{"--net=" + o.Host.Path(), "--", bin, "--config=" + k.path("config.json"),
		"--kubeconfig=" + o.Kubeconfig, "--root-dir=" + k.path("root"), "--cert-dir=" + k.path("pki"),
		"--hostname-override=" + o.NodeName, "--node-ip=" + o.NodeIP, "--v=1"}
	if k.proc, err = startProc(dir, "kubelet", "nsenter", args...); err != nil {
		t.Fatalf("start kubelet: %v", err)
	}
	k.waitHealthy()
	logf(t, "kubelet %s healthy in %v", o.NodeName, time.Since(start).Round(time.Millisecond))
	return k
}

func (k *Kubelet) path(name string) string { return filepath.Join(k.Dir, name) }

// prepare makes the cgroup root, picks the ports and writes the config.
func (k *Kubelet) prepare() {
	t := k.t
	t.Helper()
	if err := makeCgroup(k.CgroupRoot); err != nil {
		t.Fatalf("cgroup root %s: %v", k.CgroupRoot, err)
	}
	var err error
	if k.Port, err = freePortIn(k.opts.Host, k.opts.NodeIP); err != nil {
		t.Fatalf("kubelet port: %v", err)
	}
	if k.healthz, err = freePortIn(k.opts.Host, "127.0.0.1"); err != nil {
		t.Fatalf("kubelet healthz port: %v", err)
	}
	b, err := json.MarshalIndent(k.config(), "", "  ")
	if err == nil {
		err = os.WriteFile(k.path("config.json"), b, 0o600)
	}
	if err != nil {
		t.Fatalf("kubelet config: %v", err)
	}
}

// config is the KubeletConfiguration; see the comment at the top.
func (k *Kubelet) config() map[string]any {
	off := map[string]any{"enabled": false}
	evict := map[string]string{}
	for _, s := range []string{"memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree", "pid.available"} {
		evict[s] = "0%"
	}
	return map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
		"address": k.opts.NodeIP, "port": k.Port, "readOnlyPort": 0,
		"healthzBindAddress": "127.0.0.1", "healthzPort": k.healthz,
		"authentication":           map[string]any{"anonymous": off, "webhook": off},
		"authorization":            map[string]any{"mode": "AlwaysAllow"},
		"containerRuntimeEndpoint": "unix://" + k.opts.RuntimeSocket,
		"cgroupDriver":             "cgroupfs", "cgroupRoot": k.CgroupRoot,
		"failCgroupV1": false, "failSwapOn": false, "makeIPTablesUtilChains": false,
		"evictionHard":                evict,
		"imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
		"podLogsDir": k.path("pods"), "volumePluginDir": k.path("volume-plugins"),
		"registerNode": true, "staticPodPath": "", "maxOpenFiles": nofileLimit(),
	}
}

// nofileLimit is the hard open files limit the kubelet inherits: it sets
// its own to maxOpenFiles (default 1000000), which it may not raise here.
func nofileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1000000
	}
	return l.Max
}

// waitHealthy polls /healthz inside the node namespace, failing early if
// the kubelet exits.
func (k *Kubelet) waitHealthy() {
	k.t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: k.dial}}
	defer c.CloseIdleConnections()
	url := "http://127.0.0.1:" + strconv.Itoa(k.healthz) + "/healthz"
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("kubelet not healthy: %v\n%s", err, k.LogTail())
		}
		select {
		case <-k.proc.done:
			k.t.Fatalf("kubelet exited (%v) before it was healthy:\n%s", k.proc.cmd.ProcessState, k.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dial connects from inside the node namespace.
func (k *Kubelet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := k.opts.Host.Do(func(ns.NetNS) error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Pid is the kubelet's process ID.
func (k *Kubelet) Pid() int { return k.proc.cmd.Process.Pid }

// LogTail is the end of the kubelet's log.
func (k *Kubelet) LogTail() string {
	b, _ := os.ReadFile(k.path("kubelet.log"))
	return tail(b, 40)
}

// remove stops the kubelet by its PID (SIGTERM, then SIGKILL) and undoes
// everything it did to the machine. Pods stay to containerd's cleanup.
func (k *Kubelet) remove() {
	if k.proc != nil {
		k.proc.stop()
		if tb, ok := k.t.(interface{ Failed() bool }); ok && tb.Failed() {
			logf(k.t, "last lines of the kubelet's log:\n%s", k.LogTail())
		}
	}
	removeCgroups(k.CgroupRoot)
	if k.held {
		for _, err := range releaseHost(k.path("pods")) {
			k.t.Errorf("kubelet cleanup: %v", err)
		}
	}
	UnmountUnder(k.Dir)
	if err := os.RemoveAll(k.Dir); err != nil {
		k.t.Errorf("remove %s: %v", k.Dir, err)
	}
}

// makeCgroup creates path in every cgroup hierarchy (the unified one
// alone on a cgroup v2 machine).
func makeCgroup(path string) error {
	roots := []string{"/sys/fs/cgroup"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		roots, _ = filepath.Glob("/sys/fs/cgroup/*")
	}
	for _, r := range roots {
		if fi, err := os.Stat(r); err != nil || !fi.IsDir() {
			continue
		}
		if err := os.Mkdir(filepath.Join(r, path), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// freePortIn asks the kernel of n for a free TCP port on addr.
func freePortIn(n ns.NetNS, addr string) (int, error) {
	var port int
	err := n.Do(func(ns.NetNS) error {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	})
	return port, err
}

// kubeletSysctls are the tunables every kubelet sets on the machine.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic",
	"kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// containerLogsDir is where every kubelet links container logs.
const containerLogsDir = "/var/log/containers"

// machine is what running kubelets change on the machine itself. The
// first one saves it and the last one restores it, so that parallel
// kubelets do not restore each other's values.
var machine struct {
	sync.Mutex
	kubelets  int
	sysctls   map[string]string
	hadLogDir bool
}

// holdHost counts a kubelet in, saving the machine's state if first.
func holdHost() error {
	machine.Lock()
	defer machine.Unlock()
	if machine.kubelets == 0 {
		saved := map[string]string{}
		for _, s := range kubeletSysctls {
			b, err := os.ReadFile("/proc/sys/" + s)
			if err != nil {
				return err
			}
			saved[s] = strings.TrimSpace(string(b))
		}
		_, err := os.Stat(containerLogsDir)
		machine.sysctls, machine.hadLogDir = saved, err == nil
	}
	machine.kubelets++
	return nil
}

// releaseHost removes a stopped kubelet's log links (those into its
// podLogsDir) and counts it out; the last one restores the machine.
func releaseHost(podLogsDir string) []error {
	var errs []error
	links, _ := filepath.Glob(filepath.Join(containerLogsDir, "*.log"))
	for _, l := range links {
		if dst, err := os.Readlink(l); err == nil && strings.HasPrefix(dst, podLogsDir+"/") {
			if err := os.Remove(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	machine.Lock()
	defer machine.Unlock()
	if machine.kubelets--; machine.kubelets > 0 {
		return errs
	}
	for s, v := range machine.sysctls {
		if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore %s=%s: %w", s, v, err))
		}
	}
	if !machine.hadLogDir {
		if err := os.Remove(containerLogsDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errs
}
