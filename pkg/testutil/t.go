package testutil

import (
	"fmt"
	"os"
	"sync"
)

// T is the part of testing.TB these helpers use, so that benchmark and
// demo drivers outside `go test` can use them too (see Standalone).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Standalone is a T for programs: Fatalf runs the cleanups and exits.
type Standalone struct {
	mu       sync.Mutex
	cleanups []func()
}

func (s *Standalone) Helper() {}

func (s *Standalone) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (s *Standalone) Fatalf(format string, args ...any) {
	s.Errorf(format, args...)
	s.Close()
	os.Exit(1)
}

func (s *Standalone) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *Standalone) TempDir() string {
	dir, err := os.MkdirTemp("", "nswire")
	if err != nil {
		s.Fatalf("temp dir: %v", err)
	}
	s.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Close runs the cleanups, newest first.
func (s *Standalone) Close() {
	s.mu.Lock()
	c := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}
