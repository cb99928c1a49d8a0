package testutil

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// PauseImage builds the pause program (pkg/testutil/pause) static and
// writes it as a one-layer OCI image archive at dir/pause.tar, named name
// (e.g. "localhost/nswire-pause:e2e"), ready for `ctr images import`. No
// registry is needed: the tests never pull an image.
func PauseImage(dir, name string) (string, error) {
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/nswire/nswire/pkg/testutil/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pause: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	archive := filepath.Join(dir, "pause.tar")
	return archive, os.WriteFile(archive, ociArchive(name, "/pause", prog), 0o600)
}

// blob is one content-addressed file of an OCI layout.
type blob struct {
	mediaType string
	data      []byte
}

func (b blob) digest() string {
	sum := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (b blob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

// ociArchive is an OCI image layout in a tar: one uncompressed layer
// holding prog at path, which is also the entrypoint.
func ociArchive(name, path string, prog []byte) []byte {
	layer := blob{"application/vnd.oci.image.layer.v1.tar", tarFiles(map[string][]byte{path[1:]: prog}, 0o755)}
	config := blob{"application/vnd.oci.image.config.v1+json", mustJSON(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{path}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layer.digest()}},
	})}
	manifest := blob{"application/vnd.oci.image.manifest.v1+json", mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": config.descriptor(), "layers": []any{layer.descriptor()},
	})}
	ref := manifest.descriptor()
	ref["annotations"] = map[string]string{"io.containerd.image.name": name}
	index := mustJSON(map[string]any{"schemaVersion": 2, "manifests": []any{ref}})
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": index,
	}
	for _, b := range []blob{layer, config, manifest} {
		files["blobs/sha256/"+b.digest()[len("sha256:"):]] = b.data
	}
	return tarFiles(files, 0o644)
}

// tarFiles makes a tar of regular files (parent directories implied).
func tarFiles(files map[string][]byte, mode int64) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(data)
	}
	_ = tw.Close()
	return buf.Bytes()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
