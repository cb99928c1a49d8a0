package startup

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The test binary imports the package, so its init ran here too.
func TestOneProc(t *testing.T) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS is set in the environment")
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS = %d, want 1", n)
	}
}

// An explicit GOMAXPROCS wins: run this test binary again with one set.
func TestEnvironmentWins(t *testing.T) {
	if os.Getenv("NSWIRE_STARTUP_CHILD") != "" {
		// Print what the child runs with, for the parent to read.
		println("procs", runtime.GOMAXPROCS(0))
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestEnvironmentWins$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NSWIRE_STARTUP_CHILD=1", "GOMAXPROCS=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, after, found := strings.Cut(string(out), "procs ")
	if !found {
		t.Fatalf("child printed no count:\n%s", out)
	}
	n, err := strconv.Atoi(strings.Fields(after)[0])
	if err != nil || n != 3 {
		t.Fatalf("child ran with GOMAXPROCS %q, want 3", strings.Fields(after)[0])
	}
}
