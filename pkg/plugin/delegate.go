package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
)

// execDelegate runs the plugin typ from CNI_PATH with our environment but
// CNI_COMMAND=verb, the way the CNI spec delegates IPAM. It replaces
// pkg/invoke, whose tracing imports pull net/http and crypto into every
// start of the binary.
func execDelegate(verb, typ string, stdin []byte) ([]byte, error) {
	path, err := findPlugin(typ)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	for attempt := 0; ; attempt++ {
		stdout.Reset()
		stderr.Reset()
		cmd := exec.Command(path)
		cmd.Env = withCommand(os.Environ(), verb)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
		err = cmd.Run()
		// ETXTBSY: a binary being installed as we run it; brief and rare.
		if !errors.Is(err, syscall.ETXTBSY) || attempt == 5 {
			break
		}
	}
	if err != nil {
		return nil, delegateErr(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

func findPlugin(typ string) (string, error) {
	dirs := filepath.SplitList(os.Getenv("CNI_PATH"))
	for _, d := range dirs {
		p := filepath.Join(d, typ)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", types.NewError(types.ErrInvalidEnvironmentVariables,
		fmt.Sprintf("plugin %q not found in CNI_PATH %v", typ, dirs), "")
}

func withCommand(env []string, verb string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CNI_COMMAND=") {
			out = append(out, kv)
		}
	}
	return append(out, "CNI_COMMAND="+verb)
}

// delegateErr turns a failed run into the CNI error the plugin printed.
func delegateErr(err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &e) == nil && e.Code != 0 {
		return &e
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		msg = strings.TrimSpace(string(stdout))
	}
	return fmt.Errorf("%w: %s", err, msg)
}
