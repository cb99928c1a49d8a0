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
		return nil, delegateErr(path, err, stdout.Bytes(), stderr.Bytes())
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
// Without one: a plugin that could not start (not executable here, not a
// binary for this machine) is a bad CNI_PATH, code 4; one killed by a
// signal (the OOM killer, a timeout) may succeed when retried, code 11.
// A plugin that exited without a CNI error failed in a way nswire cannot
// know: its output goes on, the code stays 999.
func delegateErr(path string, err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &e) == nil && e.Code != 0 {
		return &e
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		msg = strings.TrimSpace(string(stdout))
	}
	var exit *exec.ExitError
	switch {
	case !errors.As(err, &exit):
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_PATH: plugin %s cannot run: %v", path, err), msg)
	case signaled(exit):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("plugin %s was killed (%v): retry", path, err), msg)
	}
	return fmt.Errorf("plugin %s: %w: %s", path, err, msg)
}

func signaled(exit *exec.ExitError) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}
