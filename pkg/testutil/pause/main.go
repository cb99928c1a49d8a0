// Command pause is the sandbox ("pause") process of the test pod sandboxes:
// it holds the pod's namespaces and exits on SIGTERM or SIGINT. The tests
// build it static and package it as an OCI image (testutil.PauseImage),
// since no registry is reachable from the test machine.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of the pod it also adopts orphans; Go's runtime reaps
	// nothing, so collect them until told to stop.
	signal.Notify(sig, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
