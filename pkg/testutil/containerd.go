package testutil

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PauseImageName is the sandbox image every test containerd imports.
const PauseImageName = "localhost/nswire-pause:e2e"

// Containerd is a containerd daemon (Debian's 1.6, with its CRI plugin) run
// by a test with private root, state, socket and config, inside a private
// host namespace: the CNI plugins it runs act in that namespace. Pods get
// the cgroup parent CgroupParent, which the cleanup removes.
type Containerd struct {
	Dir          string // root, state, socket, config, logs
	Socket       string
	ConfDir      string // CNI conf_dir
	CgroupParent string
	Runtime      cri.RuntimeServiceClient
	opts         ContainerdOptions
	daemon       *proc
	conn         *grpc.ClientConn
	t            T
}

// ContainerdOptions says where containerd runs and finds its CNI plugins.
type ContainerdOptions struct {
	Host         *Host  // the namespace containerd and its plugins run in
	BinDir       string // CNI bin_dir: nswire, nswire-ipam, loopback
	ConfTemplate string // CNI conf_template, rendered at UpdateRuntimeConfig
}

// StartContainerd starts containerd, imports the pause image and connects
// a CRI client. Everything is removed in t.Cleanup: pods (so their CNI DEL
// runs), the daemon, its shims, mounts and cgroups.
func StartContainerd(t T, o ContainerdOptions) *Containerd {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Fatalf("containerd is not installed (apt-get install containerd): %v", err)
	}
	dir, err := os.MkdirTemp("", "nswire-ctrd")
	if err != nil {
		t.Fatalf("containerd dir: %v", err)
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), ConfDir: filepath.Join(dir, "net.d"),
		CgroupParent: "/" + Name("ctrd"), opts: o, t: t}
	t.Cleanup(c.remove)
	if err := os.MkdirAll(c.ConfDir, 0o755); err != nil {
		t.Fatalf("conf dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(c.config()), 0o600); err != nil {
		t.Fatalf("containerd config: %v", err)
	}
	c.Start()
	archive, err := PauseImage(dir, PauseImageName)
	if err != nil {
		t.Fatalf("pause image: %v", err)
	}
	if out, err := c.ctr("images", "import", archive); err != nil {
		t.Fatalf("import pause image: %v\n%s", err, out)
	}
	return c
}

// config is containerd's configuration (version 2, as 1.6 and 1.7 read it).
func (c *Containerd) config() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
    max_conf_num = 1
    conf_template = %[8]q
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, c.Socket+".ttrpc",
		PauseImageName, c.opts.BinDir, c.ConfDir, c.opts.ConfTemplate)
}

// Start runs the daemon (again, after Stop: same root and state) and waits
// until CRI answers.
func (c *Containerd) Start() {
	c.t.Helper()
	var err error
	c.daemon, err = startProc(c.Dir, "containerd", "nsenter", "--net="+c.opts.Host.Path(), "--",
		"containerd", "--config", filepath.Join(c.Dir, "config.toml"))
	if err != nil {
		c.t.Fatalf("start containerd: %v", err)
	}
	c.conn, err = grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatalf("CRI client: %v", err)
	}
	c.Runtime = cri.NewRuntimeServiceClient(c.conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Runtime.Version(ctx, &cri.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("containerd's CRI does not answer: %v\n%s", err, c.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the daemon by its PID; running pods and their shims stay, as
// with a containerd restarted on a node.
func (c *Containerd) Stop() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	if c.daemon != nil {
		c.daemon.stop()
		c.daemon = nil
	}
}

// ctr runs containerd's own client against this daemon, in CRI's namespace.
func (c *Containerd) ctr(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "ctr", append([]string{"--address", c.Socket, "-n", "k8s.io"}, args...)...).CombinedOutput()
}

// LogTail is the end of the daemon's log, for failure messages.
func (c *Containerd) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// remove tears everything down, best effort, in dependency order.
func (c *Containerd) remove() {
	if c.conn != nil {
		c.removePods()
	}
	c.Stop()
	killShims(c.Socket)
	removeCgroups(c.CgroupParent)
	UnmountUnder(c.Dir)
	if err := os.RemoveAll(c.Dir); err != nil {
		c.t.Errorf("remove %s: %v", c.Dir, err)
	}
}

// removePods stops and removes every sandbox, as the kubelet would, so
// the CNI plugins see a DEL for each.
func (c *Containerd) removePods() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := c.Runtime.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		c.t.Errorf("list sandboxes: %v", err)
		return
	}
	for _, s := range list.Items {
		if _, err := c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			c.t.Errorf("stop sandbox %s: %v", s.Metadata.Name, err)
		}
		if _, err := c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			c.t.Errorf("remove sandbox %s: %v", s.Metadata.Name, err)
		}
	}
}

// killShims kills the runc shims serving the daemon at socket (they
// outlive it on purpose) and what runs under them.
func killShims(socket string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && slices.Contains(args, socket) {
			var pid int
			if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// removeCgroups kills what is left in the pods' cgroup parent and removes
// it from every hierarchy (cgroup v1 and the unified one), leaves first.
func removeCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		top := filepath.Join(root, parent)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			killCgroup(dirs[i])
			_ = os.Remove(dirs[i])
		}
	}
}

func killCgroup(dir string) {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for i := 0; i < 50; i++ {
		if b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs")); len(strings.TrimSpace(string(b))) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// UnmountUnder lazily unmounts every mount below dir, deepest first
// (snapshots, netns bind mounts, shm), so that dir can be removed.
func UnmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}
