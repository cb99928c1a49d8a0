package ipam

import (
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nswire/nswire/pkg/ident"
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
	if ident.CheckName(id, maxIDLen) != nil {
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

// The hot path calls the unix package directly: os.OpenFile adds fstat,
// fcntl and epoll_ctl calls per file that a small regular file never needs.

// writeTemp writes data to the scratch file dir/name and closes it; the
// caller renames it into place. Scratch names are fixed because writers
// are serialized by the lock. A leftover of a crash is unlinked, never
// truncated: it may be a hard link to a live reservation (see
// renameNoReplace). Usually there is none, so try to create first.
func writeTemp(dir, name string, data []byte) (string, error) {
	path := filepath.Join(dir, name)
	fd, err := openExcl(path)
	if errors.Is(err, unix.EEXIST) {
		if err = unix.Unlink(path); err == nil {
			fd, err = openExcl(path)
		}
	}
	if err != nil {
		return "", &os.PathError{Op: "create", Path: path, Err: err}
	}
	err = writeAll(fd, data)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		_ = unix.Unlink(path)
		return "", &os.PathError{Op: "write", Path: path, Err: err}
	}
	return path, nil
}

func openExcl(path string) (int, error) {
	return retryEINTR(func() (int, error) {
		return unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	})
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := retryEINTR(func() (int, error) { return unix.Write(fd, data) })
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// readSmall reads a small file (reservation, index, cursor) whole.
func readSmall(path string) ([]byte, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for {
		buf = slices.Grow(buf, 512)
		n, err := retryEINTR(func() (int, error) { return unix.Read(fd, buf[len(buf):cap(buf)]) })
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

func retryEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
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

// bootIDPath names the current boot; a store last checked in another boot
// may hold what a machine crash tore (see ensureIndex).
const bootIDPath = "/proc/sys/kernel/random/boot_id"
