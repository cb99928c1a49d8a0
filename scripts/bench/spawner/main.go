// Command spawner runs programs for the benchmark's untimed peak-RSS pass
// and reports each one's peak RSS; every timed call is exec'd by the
// benchmark itself. It exists because of how Linux counts peak RSS: Go starts
// children with vfork (CLONE_VM), and at execve the kernel folds the
// high-water RSS of the memory the child shared until then, the parent's,
// into the child's ru_maxrss. A child of the benchmark (tens of MB of
// namespace handles) would report at least the benchmark's peak. This
// process stays small, so the peak it reports for a child is the child's
// own (or, for a child smaller than this process, this process's: the
// floor, which it also reports).
//
// Protocol on stdin/stdout, frames of little-endian uint32 lengths:
//
//	request:  id, path, stdin, env count, env...   (empty path: report floor)
//	response: id, exit code (-1: did not exit normally), error, stdout,
//	          stderr, maxrss KB
//
// Requests run concurrently; stdin closing kills what still runs and exits.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

func main() {
	// Collect often: the heap is a few buffers, and a lower high-water
	// mark is a lower floor.
	debug.SetGCPercent(10)
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for {
		id, err := readU32(in)
		if err != nil {
			break
		}
		path, err1 := readBytes(in)
		stdin, err2 := readBytes(in)
		n, err3 := readU32(in)
		if err := errors.Join(err1, err2, err3); err != nil {
			break
		}
		env := make([]string, 0, n)
		for range n {
			kv, err := readBytes(in)
			if err != nil {
				break
			}
			env = append(env, string(kv))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r []byte
			if len(path) == 0 {
				r = response(id, 0, "", nil, nil, hwmKB())
			} else {
				r = run(ctx, id, string(path), stdin, env)
			}
			mu.Lock()
			out.Write(r)
			out.Flush()
			mu.Unlock()
		}()
	}
	cancel()
	wg.Wait()
}

func run(ctx context.Context, id uint32, path string, stdin []byte, env []string) []byte {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code, msg := int64(0), ""
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		code, msg = int64(exitErr.ExitCode()), err.Error()
	default:
		code, msg = -1, err.Error()
	}
	var rss int64
	if st := cmd.ProcessState; st != nil {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss
		}
	}
	return response(id, code, msg, stdout.Bytes(), stderr.Bytes(), rss)
}

func response(id uint32, code int64, msg string, stdout, stderr []byte, rss int64) []byte {
	var b bytes.Buffer
	u32 := func(v uint32) { binary.Write(&b, binary.LittleEndian, v) }
	i64 := func(v int64) { binary.Write(&b, binary.LittleEndian, v) }
	bs := func(p []byte) { u32(uint32(len(p))); b.Write(p) }
	u32(id)
	i64(code)
	bs([]byte(msg))
	bs(stdout)
	bs(stderr)
	i64(rss)
	return b.Bytes()
}

// hwmKB is this process's own peak RSS: the floor of what it reports.
func hwmKB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func readU32(r io.Reader) (uint32, error) {
	var v uint32
	err := binary.Read(r, binary.LittleEndian, &v)
	return v, err
}

func readBytes(r io.Reader) ([]byte, error) {
	n, err := readU32(r)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}
