package ipam

import (
	"path/filepath"
	"strings"
)

const (
	maxNameLen   = 253 // network names end up as one path element
	maxIDLen     = 1024
	maxIfNameLen = 15 // IFNAMSIZ - 1
)

// validNetworkName follows the CNI spec's network name grammar
// ([a-zA-Z0-9][a-zA-Z0-9_.-]*), which rules out "..", "/" and control
// characters, so the name is safe as a directory name.
func validNetworkName(name string) error {
	if err := checkToken(name, maxNameLen); err != nil {
		return configError("name", "%q: %s", name, err.Error())
	}
	return nil
}

// validContainerID applies the same grammar to CNI_CONTAINERID: it is
// written into reservation files whose line structure must not be forged.
func validContainerID(id string) error {
	if err := checkToken(id, maxIDLen); err != nil {
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

type tokenError string

func (e tokenError) Error() string { return string(e) }

func checkToken(s string, max int) error {
	if s == "" {
		return tokenError("empty")
	}
	if len(s) > max {
		return tokenError("too long")
	}
	for i, c := range []byte(s) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '-' || c == '_' || c == '.') {
			continue
		}
		return tokenError("must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
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
