package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Versions are the cniVersions nswire supports, oldest first.
var Versions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// nsExec runs plugin binaries with the calling thread switched into a
// namespace, so the plugin's "host" is that namespace, not the machine.
type nsExec struct {
	*invoke.DefaultExec
	host ns.NetNS
}

func (e *nsExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	var out []byte
	err := lockedDo(e.host, func() error {
		var err error
		out, err = e.DefaultExec.ExecPlugin(ctx, path, stdin, env)
		return err
	})
	return out, err
}

// Host is a private "host" namespace with a libcni driver whose plugins run
// inside it: bridges, veth host ends, sysctls and nftables all land there.
type Host struct {
	*NS
	CNI     *libcni.CNIConfig
	DataDir string // a private IPAM dataDir for configs to use
}

// NewHost creates the namespace and a libcni driver over binDirs with a
// private result cache.
func NewHost(t T, binDirs ...string) *Host {
	t.Helper()
	requireRoot(t)
	h := &Host{NS: NewNS(t), DataDir: t.TempDir()}
	h.CNI = libcni.NewCNIConfigWithCacheDir(binDirs, t.TempDir(), &nsExec{DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}, host: h.NetNS})
	return h
}

// RT is the runtime side of one attachment.
func RT(containerID string, netns *NS, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns.Path(), IfName: ifName}
}

// ConfList turns one plugin config into a conflist of the given version.
func ConfList(t T, cniVersion string, plugins ...map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	name, _ := plugins[0]["name"].(string)
	for _, p := range plugins {
		p["cniVersion"] = cniVersion
	}
	b, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": name, "plugins": plugins})
	if err != nil {
		t.Fatalf("%v", err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("conflist: %v\n%s", err, b)
	}
	return list
}

// Result converts any version's result to the current one.
func Result(t T, r types.Result) *current.Result {
	t.Helper()
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	return res
}

// Family is the result's address of one family (IPv4 when v4), nil when
// it has none.
func Family(res *current.Result, v4 bool) *current.IPConfig {
	for _, ipc := range res.IPs {
		if (ipc.Address.IP.To4() != nil) == v4 {
			return ipc
		}
	}
	return nil
}

// ErrCode extracts the CNI error code, 0 when err is not a CNI error.
func ErrCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// Supports reports whether version v can carry verb (CHECK >= 0.4.0).
func Supports(v, verb string) bool {
	min := map[string]string{"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}[verb]
	ok, _ := version.GreaterThanOrEqualTo(v, min)
	return min == "" || ok
}

// BuildPlugins builds the module's plugin binaries into a fresh directory
// and returns it. Call it from TestMain.
// NSWIRE_PLUGIN_RACE=1 builds them with the race detector instead.
func BuildPlugins(dir string, pkgs ...string) error {
	flags, env := []string{"-trimpath", "-ldflags", "-s -w"}, "CGO_ENABLED=0" // static, as `make build` ships it
	if os.Getenv("NSWIRE_PLUGIN_RACE") == "1" {
		flags, env = []string{"-race"}, "CGO_ENABLED=1"
	}
	for _, p := range pkgs {
		args := append(append([]string{"build"}, flags...), "-o", filepath.Join(dir, filepath.Base(p)), "github.com/nswire/nswire/"+p)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), env)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return err
		}
	}
	return nil
}

// Exec runs a plugin binary directly inside the host namespace, the way a
// runtime would without libcni, and returns stdout and the exit error.
func (h *Host) Exec(bin string, env []string, stdin []byte) ([]byte, error) {
	var out []byte
	err := lockedDo(h.NetNS, func() error {
		cmd := exec.Command(bin)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(stdin)
		var err error
		out, err = cmd.Output()
		return err
	})
	return out, err
}
