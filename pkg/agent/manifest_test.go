package agent

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// manifestObjects decodes conf/k8s/nswire-agent.yaml strictly, as the API
// server's types see it.
func manifestObjects(t *testing.T) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile("../../conf/k8s/nswire-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
}

// TestManifest checks what the manifest promises: RBAC limited to reading
// nodes and writing events, an unprivileged DaemonSet on the host network
// everywhere, with probes on the health port, the CNI mounts and those of
// the restore watcher.
func TestManifest(t *testing.T) {
	var ds *appsv1.DaemonSet
	for _, obj := range manifestObjects(t) {
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			checkRules(t, o.Rules)
		case *appsv1.DaemonSet:
			ds = o
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	sc := c.SecurityContext
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("pod spec: hostNetwork %v priority %q tolerations %v", spec.HostNetwork, spec.PriorityClassName, spec.Tolerations)
	}
	if (sc.Privileged != nil && *sc.Privileged) || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("security context %+v", sc)
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("probes or NODE_NAME: %+v %+v %+v", c.LivenessProbe, c.ReadinessProbe, c.Env)
	}
	var paths []string
	for _, v := range spec.Volumes {
		paths = append(paths, v.HostPath.Path)
	}
	if !slices.Equal(paths, []string{"/opt/cni/bin", "/etc/cni/net.d", "/var/lib/cni/networks", "/run/nswire"}) {
		t.Errorf("host paths %v", paths)
	}
	// The restore watcher reads the IPAM dataDir the conflist names (the
	// host's path, read-only) and takes the plugin's network lock.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if m, ok := mounts["/var/lib/cni/networks"]; !ok || !m.ReadOnly {
		t.Errorf("IPAM dataDir mount %+v", m)
	}
	if m, ok := mounts["/run/nswire"]; !ok || m.ReadOnly {
		t.Errorf("network lock mount %+v", m)
	}
	for _, arg := range c.Args {
		if strings.HasPrefix(arg, "--restore=") || strings.HasPrefix(arg, "--ipam-data-dir") {
			t.Errorf("arg %s: the mounts above are for the defaults", arg)
		}
	}
	if !strings.Contains(strings.Join(c.Args, " "), "--cluster-cidr=") {
		t.Errorf("args %v", c.Args)
	}
}

func checkRules(t *testing.T, rules []rbacv1.PolicyRule) {
	t.Helper()
	allowed := map[string][]string{"nodes": {"get", "list", "watch"}, "events": {"create", "patch"}}
	for _, r := range rules {
		for _, res := range r.Resources {
			if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Verbs, allowed[res]) {
				t.Errorf("rule grants %v on %s in %v", r.Verbs, res, r.APIGroups)
			}
		}
	}
	if len(rules) != 2 {
		t.Errorf("%d rules", len(rules))
	}
}
