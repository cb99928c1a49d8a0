package ipam

import (
	"path/filepath"
	"strings"

	"github.com/nswire/nswire/pkg/ident"
)

const (
	maxIDLen     = 1024
	maxIfNameLen = 15 // IFNAMSIZ - 1
)

// validNetworkName is nswire's one rule for network names (the main
// plugin applies it too), which makes the name safe as a directory name.
func validNetworkName(name string) error {
	if err := ident.CheckNetworkName(name); err != nil {
		return configError("name", "%q: %s", name, err.Error())
	}
	return nil
}

// validContainerID applies the same grammar to CNI_CONTAINERID: it is
// written into reservation files whose line structure must not be forged.
func validContainerID(id string) error {
	if err := ident.CheckName(id, maxIDLen); err != nil {
		return envError("CNI_CONTAINERID", "%q: %s", id, err.Error())
	}
	return nil
}

// validIfName mirrors the kernel's rules for interface names.
func validIfName(name string) error {
	switch {
	case name == "":
		return envError("CNI_IFNAME", "empty")
	case len(name) > maxIfNameLen:
		return envError("CNI_IFNAME", "%q longer than %d bytes", name, maxIfNameLen)
	case name == "." || name == "..":
		return envError("CNI_IFNAME", "%q is not allowed", name)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return envError("CNI_IFNAME", "%q contains a forbidden character", name)
		}
	}
	return nil
}

// validDataDir accepts only a clean absolute path without control
// characters; it is joined with the network name, never with other input.
func validDataDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", configError("ipam.dataDir", "%q is not an absolute path", dir)
	}
	if strings.ContainsFunc(dir, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", configError("ipam.dataDir", "%q contains control characters", dir)
	}
	return filepath.Clean(dir), nil
}
