package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"text/template"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/nswire/nswire/pkg/testutil"
)

// cniConfigTemplate is the data containerd's CRI plugin executes
// conf_template with (pkg/cri/server/update_runtime_config.go).
type cniConfigTemplate struct {
	PodCIDR       string
	PodCIDRRanges []string
	Routes        []string
}

// TestK8sConfTemplates renders conf/k8s/*.conflist.tmpl as containerd
// does when kubelet reports the node's pod CIDRs, and runs two pods
// through the result: ADD, traffic, CHECK, DEL.
func TestK8sConfTemplates(t *testing.T) {
	cases := map[string]cniConfigTemplate{
		"nswire.conflist.tmpl": {PodCIDR: "10.195.1.0/24", PodCIDRRanges: []string{"10.195.1.0/24"}, Routes: []string{"0.0.0.0/0"}},
		"nswire-dualstack.conflist.tmpl": {PodCIDR: "10.195.2.0/24", PodCIDRRanges: []string{"10.195.2.0/24", "fd00:195:2::/64"},
			Routes: []string{"0.0.0.0/0", "::/0"}},
	}
	for file, data := range cases {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			lk := newLeaks(t)
			h := lk.host(binDir)
			tmpl, err := template.ParseFiles(filepath.Join(repo, "conf", "k8s", file))
			if err != nil {
				t.Fatalf("containerd would fail to parse the template: %v", err)
			}
			var buf bytes.Buffer
			if err := tmpl.Execute(&buf, data); err != nil {
				t.Fatalf("containerd would fail to render the template: %v", err)
			}
			list, err := libcni.ConfListFromBytes(buf.Bytes())
			if err != nil {
				t.Fatalf("rendered template is not a conflist: %v\n%s", err, buf.Bytes())
			}
			if list.CNIVersion != "1.0.0" {
				t.Errorf("cniVersion %s: containerd 1.6/1.7 parse results up to 1.0.0", list.CNIVersion)
			}
			// Same config, made private to this test: name, bridge, dataDir.
			name := testutil.Name("e2e-k8s")
			lk.network(name, h.DataDir)
			var raw map[string]any
			if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
				t.Fatal(err)
			}
			raw["name"] = name
			p := raw["plugins"].([]any)[0].(map[string]any)
			p["bridge"] = testutil.Name("e2ek8s")
			p["ipam"].(map[string]any)["dataDir"] = h.DataDir
			b, _ := json.Marshal(raw)
			if list, err = libcni.ConfListFromBytes(b); err != nil {
				t.Fatal(err)
			}

			ctx := context.Background()
			a, pb := lk.ns(), lk.ns()
			rtA, rtB := testutil.RT("k8s-pod-a", a, "eth0"), testutil.RT("k8s-pod-b", pb, "eth0")
			// what kubelet passes for a pod with a hostPort
			rtA.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": publishedPort, "containerPort": servicePort, "protocol": "tcp"}}}
			resA := testutil.Result(t, mustAdd(t, h, list, rtA))
			mustAdd(t, h, list, rtB)
			if len(resA.IPs) != len(data.PodCIDRRanges) {
				t.Errorf("pod got %d addresses for %d pod CIDRs", len(resA.IPs), len(data.PodCIDRRanges))
			}
			serve(t, a, servicePort, "a")
			for _, ipc := range resA.IPs {
				expectTag(t, "pod b -> pod a", pb, ipc.Address.IP, servicePort, "a")
				expectTag(t, "node -> hostPort", h.NS, ipc.Gateway, publishedPort, "a")
			}
			for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
				if err := h.CNI.CheckNetworkList(ctx, list, rt); err != nil {
					t.Errorf("CHECK %s: %v", rt.ContainerID, err)
				}
				if err := h.CNI.DelNetworkList(ctx, list, rt); err != nil {
					t.Errorf("DEL %s: %v", rt.ContainerID, err)
				}
			}
			assertHostClean(t, h, name, h.DataDir)
		})
	}
}

func mustAdd(t *testing.T, h *testutil.Host, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) types.Result {
	t.Helper()
	r, err := h.CNI.AddNetworkList(context.Background(), list, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", rt.ContainerID, err)
	}
	t.Cleanup(func() { _ = h.CNI.DelNetworkList(context.Background(), list, rt) })
	return r
}
