package link

import (
	"bytes"
	"os"
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
// calling thread's namespace.
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := setSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
	}
	if v6 {
		return setSysctl("net/ipv6/conf/all/forwarding", "1")
	}
	return nil
}
