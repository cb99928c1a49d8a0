package ipam

import (
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Owner file format, shared with host-local: "containerID\r\nifname".
const lineBreak = "\r\n"

func encodeOwner(a Attachment) []byte {
	return []byte(a.ContainerID + lineBreak + a.IfName)
}

// decodeOwner parses a reservation file. A file holding only a container ID
// is a legacy host-local reservation (IfName ""). Anything else, including
// an empty file left by a torn host-local write, is corrupt.
func decodeOwner(data []byte) (Attachment, error) {
	id, ifname, two := strings.Cut(strings.TrimSpace(string(data)), lineBreak)
	if checkToken(id, maxIDLen) != nil {
		return Attachment{}, fmt.Errorf("bad container ID %q", id)
	}
	if two && validIfName(ifname) != nil {
		return Attachment{}, fmt.Errorf("bad interface name %q", ifname)
	}
	return Attachment{ContainerID: id, IfName: ifname}, nil
}

const indexMagic = "nswire-index 1\n"

// encodeIndex writes the attachment's identity (to catch hash collisions
// and for repairs) and its addresses, closed by a CRC so a torn or
// bit-flipped file is detected instead of trusted.
func encodeIndex(a Attachment, ips []netip.Addr) []byte {
	var b strings.Builder
	b.WriteString(indexMagic + a.ContainerID + "\n" + a.IfName + "\n")
	for _, ip := range ips {
		b.WriteString(ip.String() + "\n")
	}
	fmt.Fprintf(&b, "crc32 %08x\n", crc32.ChecksumIEEE([]byte(b.String())))
	return []byte(b.String())
}

func decodeIndex(data []byte) (Attachment, []netip.Addr, error) {
	s := string(data)
	body, sum, ok := strings.Cut(s, "crc32 ")
	if !ok || !strings.HasPrefix(body, indexMagic) || sum != fmt.Sprintf("%08x\n", crc32.ChecksumIEEE([]byte(body))) {
		return Attachment{}, nil, errors.New("bad header or checksum")
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) < 3 {
		return Attachment{}, nil, errors.New("truncated")
	}
	a := Attachment{ContainerID: lines[1], IfName: lines[2]}
	var ips []netip.Addr
	for _, l := range lines[3:] {
		ip, err := netip.ParseAddr(l)
		if err != nil {
			return Attachment{}, nil, err
		}
		ips = append(ips, ip)
	}
	return a, ips, nil
}

// writeTemp writes data to the scratch file `name` in dir and fsyncs it, so
// its content is durable before it gets its real name. Scratch names are
// fixed because writers are serialized by the lock; the old file is
// unlinked first, never truncated, because a crash may have left it as a
// hard link to a live reservation.
func writeTemp(dir, name string, data []byte, sync bool) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	return path, nil
}

// renameNoReplace moves from to to, failing with os.ErrExist if to exists,
// so even a writer that ignores the lock can never overwrite a reservation.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	// Filesystems without RENAME_NOREPLACE: link(2) refuses to replace too.
	if err := os.Link(from, to); err != nil {
		return err
	}
	return os.Remove(from)
}

// syncDir makes the names created or removed in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncFS flushes the whole filesystem once; rebuilds write many files and
// one syncfs is far cheaper than an fsync per file.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
