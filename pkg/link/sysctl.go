package link

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// setSysctl writes value to /proc/sys/<key> unless it already holds it: a
// read is cheaper than a write that fires notifiers.
func setSysctl(key, value string) error {
	path := "/proc/sys/" + key
	cur, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	return os.WriteFile(path, []byte(value), 0o644)
}

// EnableForwarding turns on IPv4 and, when asked, IPv6 forwarding in the
// calling thread's namespace. The switches are read over netlink (see
// devconf.go); /proc/sys is written only when one is off.
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := enableForwarding(unix.AF_INET, "net/ipv4/ip_forward"); err != nil {
			return err
		}
	}
	if v6 {
		err := enableForwarding(unix.AF_INET6, "net/ipv6/conf/all/forwarding")
		if errors.Is(err, fs.ErrNotExist) {
			// No /proc/sys/net/ipv6 at all: booted with ipv6.disable=1.
			return fmt.Errorf("IPv6 forwarding: %w: %w: IPv6 is off (ipv6.disable=1 on the kernel command line) but the network has IPv6 ranges: remove them, or boot with IPv6", err, ErrKernelFeature)
		}
		return err
	}
	return nil
}

func enableForwarding(family uint8, key string) error {
	if on, err := forwarding(family); err == nil && on {
		return nil
	}
	return setSysctl(key, "1")
}
