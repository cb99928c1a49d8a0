package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nswire/nswire/pkg/ident"
	"golang.org/x/sys/unix"
)

// Layout of dataDir/<network> (the first three are host-local's, so either
// plugin can read the other's reservations):
//
//	lock                    flock(2) target serializing all writers
//	<ip>                    one reservation: "containerID\r\nifname"
//	last_reserved_ip.<set>  allocation cursor of range set <set>
//	.nswire/version         the index below is complete, and in which boot
//	.nswire/a-<hash>        index: attachment -> its addresses
//	.nswire/tmp.*           scratch files, renamed into place
//
// The <ip> files are the authority; an index entry is a pointer that is
// only trusted after the file it points to confirms the owner.
const (
	lockFileName = "lock"
	lastIPPrefix = "last_reserved_ip."
	indexDirName = ".nswire"
	versionFile  = "version"
	indexPrefix  = "a-"
)

// DiskStore is the crash-safe, indexed Store on a local filesystem.
type DiskStore struct {
	dir      string
	indexDir string
	lock     *os.File
}

var _ Store = (*DiskStore)(nil)

// OpenDiskStore opens (creating if needed) the store of network under
// dataDir. It does not lock; call Lock before anything else.
func OpenDiskStore(dataDir, network string) (*DiskStore, error) {
	if err := validNetworkName(network); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, network)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, ioError("create "+dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, ioError("open lock", err)
	}
	return &DiskStore{dir: dir, indexDir: filepath.Join(dir, indexDirName), lock: f}, nil
}

// Lock takes the inter-process lock and, the first time a directory is
// opened by nswire (e.g. one written by host-local), builds the index.
func (s *DiskStore) Lock() error {
	for {
		err := unix.Flock(int(s.lock.Fd()), unix.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return busyError("ipam store: lock %s: %v", s.dir, err)
		}
	}
	if err := s.ensureIndex(); err != nil {
		_ = s.Unlock()
		return err
	}
	return nil
}

func (s *DiskStore) Unlock() error {
	if err := unix.Flock(int(s.lock.Fd()), unix.LOCK_UN); err != nil {
		return ioError("unlock", err)
	}
	return nil
}

// Close releases the lock too (flock dies with the file description).
func (s *DiskStore) Close() error {
	return s.lock.Close()
}

func (s *DiskStore) ipPath(ip netip.Addr) string {
	return filepath.Join(s.dir, ip.String())
}

// Indexed reports, without taking the lock, whether the network's store
// holds nswire's index. It does not when nswire never reserved there (a
// new network, or host-local's directory) or when an admin removed the
// directory, maybe while its containers live.
func (c *Config) Indexed() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, c.Name, indexDirName, versionFile))
	return err == nil
}

// exists reports whether the network's store directory is there; an error
// other than "not found" counts as there, for the store to report it.
func (c *Config) exists() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, c.Name))
	return !errors.Is(err, os.ErrNotExist)
}

// indexName derives the index file from the attachment, so a lookup is one
// open(2) however many reservations exist.
func indexName(a Attachment) string {
	return indexPrefix + ident.Hex(32, a.ContainerID, a.IfName)
}

func (s *DiskStore) indexPath(a Attachment) string {
	return filepath.Join(s.indexDir, indexName(a))
}

// claim is what an attachment's index says, checked against the
// reservation files it points to.
type claim struct {
	held    []netip.Addr // files confirm a as owner
	corrupt []netip.Addr // files unreadable: might be a's, might be live
	stale   bool         // the index lists addresses a does not hold
}

func (s *DiskStore) lookup(a Attachment) (claim, error) {
	ips, err := s.readIndex(a)
	if err != nil {
		return claim{}, err
	}
	var c claim
	for _, ip := range ips {
		owner, state, err := s.owner(ip)
		switch {
		case err != nil:
			return claim{}, err
		case state == ownerCorrupt:
			c.corrupt = append(c.corrupt, ip)
		case state == ownerSet && owner == a:
			c.held = append(c.held, ip)
		default:
			// Left by an ADD that crashed before creating the file, or
			// taken over by someone else after that: not a's.
			c.stale = true
		}
	}
	return c, nil
}

// readIndex returns the addresses a's index points to. A corrupt index is
// rebuilt from the reservation files (a walk, but only on this rare path).
func (s *DiskStore) readIndex(a Attachment) ([]netip.Addr, error) {
	data, err := readSmall(s.indexPath(a))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, ioError("read index of "+a.ContainerID, err)
	}
	owner, ips, err := decodeIndex(data)
	if err == nil && owner == a {
		return ips, nil
	}
	return s.repairIndex(a)
}

func (s *DiskStore) repairIndex(a Attachment) ([]netip.Addr, error) {
	res, err := s.List()
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, r := range res {
		if !r.Corrupt && r.Owner == a {
			ips = append(ips, r.IP)
		}
	}
	return ips, s.writeIndex(a, ips)
}

type ownerState int

const (
	ownerNone ownerState = iota
	ownerSet
	ownerCorrupt
)

func (s *DiskStore) owner(ip netip.Addr) (Attachment, ownerState, error) {
	data, err := readSmall(s.ipPath(ip))
	if errors.Is(err, os.ErrNotExist) {
		return Attachment{}, ownerNone, nil
	}
	if err != nil {
		return Attachment{}, ownerNone, ioError("read reservation "+ip.String(), err)
	}
	a, err := decodeOwner(data)
	if err != nil {
		return Attachment{}, ownerCorrupt, nil
	}
	return a, ownerSet, nil
}

// Held fails with a clear error when a's index points to a corrupt
// reservation file: the address stays reserved until GC settles it.
func (s *DiskStore) Held(a Attachment) ([]netip.Addr, error) {
	c, err := s.lookup(a)
	if err != nil {
		return nil, err
	}
	if len(c.corrupt) > 0 {
		return nil, corruptError(s.ipPath(c.corrupt[0]))
	}
	return c.held, nil
}

func corruptError(path string) error {
	return ioError("corrupt reservation "+path, errors.New("owner unreadable; the address stays reserved; run CNI GC to settle it"))
}

func (s *DiskStore) Taken(ip netip.Addr) (bool, error) {
	_, err := os.Lstat(s.ipPath(ip))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, ioError("stat reservation "+ip.String(), err)
	}
	return true, nil
}

// Reserve makes the index point to every new address before that
// address's file appears, so every reservation file is reachable from its
// owner's index at every instant, whenever the writer is killed; the
// reverse (a pointer to a missing file) is harmless and cleaned up on the
// next write. A machine crash may lose any of it: the first use in the
// next boot rebuilds the index (ensureIndex). The allocator checked the
// addresses are free under this lock; renaming without replace makes sure,
// so no second check here.
func (s *DiskStore) Reserve(a Attachment, ips []netip.Addr) error {
	c, err := s.lookup(a)
	if err != nil {
		return err
	}
	if len(c.corrupt) > 0 {
		return corruptError(s.ipPath(c.corrupt[0]))
	}
	add, drop := missing(ips, c.held), missing(c.held, ips)
	if len(add) > 0 {
		if err := s.addFiles(a, c.held, add); err != nil {
			return err
		}
	}
	if len(drop) > 0 {
		if err := s.removeFiles(drop); err != nil {
			return err
		}
	}
	if len(drop) > 0 || c.stale && len(add) == 0 {
		return s.writeIndex(a, ips)
	}
	return nil
}

func (s *DiskStore) addFiles(a Attachment, held, add []netip.Addr) error {
	b, err := s.stage(a, append(held[:len(held):len(held)], add...), add)
	if err != nil {
		return err
	}
	defer b.discard()
	created, err := b.commit()
	if err == nil {
		return nil
	}
	// Undo in reverse so nothing stays half-allocated.
	if len(created) > 0 {
		_ = s.removeFiles(created)
	}
	_ = s.writeIndex(a, held)
	return err
}

// batch is one Reserve's new index and reservation files, written to
// scratch files first so each appears whole under its real name.
type batch struct {
	s     *DiskStore
	a     Attachment
	index string // scratch path of the new index; "" once renamed
	ips   []netip.Addr
	files []string // scratch path of ips[i]'s reservation; "" once renamed
}

func (s *DiskStore) stage(a Attachment, all, add []netip.Addr) (*batch, error) {
	b := &batch{s: s, a: a, ips: add}
	var err error
	if b.index, err = writeTemp(s.indexDir, "tmp.index", encodeIndex(a, all)); err != nil {
		return nil, ioError("write index of "+a.ContainerID, err)
	}
	crashPoint("index written")
	for i, ip := range add {
		f, err := writeTemp(s.indexDir, "tmp.ip."+strconv.Itoa(i), encodeOwner(a))
		if err != nil {
			b.discard()
			return nil, ioError("write reservation "+ip.String(), err)
		}
		b.files = append(b.files, f)
		crashPoint("reservation written")
	}
	return b, nil
}

// commit puts the index in place, then each reservation file, so a file
// never exists without the index entry that leads to it.
func (b *batch) commit() (created []netip.Addr, err error) {
	if err := unix.Rename(b.index, b.s.indexPath(b.a)); err != nil {
		return nil, ioError("rename index of "+b.a.ContainerID, err)
	}
	b.index = ""
	crashPoint("index renamed")
	for i, ip := range b.ips {
		if err := renameNoReplace(b.files[i], b.s.ipPath(ip)); err != nil {
			if errors.Is(err, os.ErrExist) {
				return created, busyError("address %s is already reserved", ip)
			}
			return created, ioError("create reservation "+ip.String(), err)
		}
		b.files[i] = ""
		created = append(created, ip)
		crashPoint("reservation renamed")
	}
	return created, nil
}

// discard removes the scratch files not renamed into place.
func (b *batch) discard() {
	for _, path := range append([]string{b.index}, b.files...) {
		if path != "" {
			_ = unix.Unlink(path)
		}
	}
}

// removeFiles deletes reservation files; the caller drops them from the
// index after (the order of Reserve, reversed).
func (s *DiskStore) removeFiles(ips []netip.Addr) error {
	for _, ip := range ips {
		if err := unix.Unlink(s.ipPath(ip)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ioError("remove reservation "+ip.String(), err)
		}
		crashPoint("reservation removed")
	}
	return nil
}

// writeIndex replaces a's index atomically; an empty set removes it.
func (s *DiskStore) writeIndex(a Attachment, ips []netip.Addr) error {
	if len(ips) == 0 {
		return s.removeIndex(a)
	}
	tmp, err := writeTemp(s.indexDir, "tmp.index", encodeIndex(a, ips))
	if err != nil {
		return ioError("write index of "+a.ContainerID, err)
	}
	crashPoint("index written")
	if err := unix.Rename(tmp, s.indexPath(a)); err != nil {
		return ioError("rename index of "+a.ContainerID, err)
	}
	crashPoint("index renamed")
	return nil
}

// removeIndex comes after the files it points to are gone; an index left
// pointing to missing files is ignored by lookups.
func (s *DiskStore) removeIndex(a Attachment) error {
	if err := unix.Unlink(s.indexPath(a)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return ioError("remove index of "+a.ContainerID, err)
	}
	crashPoint("index removed")
	return nil
}

// Release keeps corrupt files a's index points to: they might be someone
// else's live reservation. GC settles them.
func (s *DiskStore) Release(a Attachment) error {
	c, err := s.lookup(a)
	if err != nil {
		return err
	}
	if len(c.held) > 0 {
		if err := s.removeFiles(c.held); err != nil {
			return err
		}
	}
	return s.removeIndex(a)
}

func (s *DiskStore) cursorPath(set int) string {
	return filepath.Join(s.dir, lastIPPrefix+strconv.Itoa(set))
}

func (s *DiskStore) LastReserved(set int) (netip.Addr, bool) {
	data, err := readSmall(s.cursorPath(set))
	if err != nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	return ip, err == nil
}

// SetLastReserved is not synced and overwrites in place (as host-local
// does, minus its truncate-first): the cursor only spreads allocations,
// and a lost or torn one just restarts the scan at the range start.
// Overwriting the allocated block also spares ext4 the writeback it
// forces when a file is renamed over another or truncated to zero.
func (s *DiskStore) SetLastReserved(set int, ip netip.Addr) error {
	path := s.cursorPath(set)
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600) })
	if err != nil {
		return ioError("open cursor", err)
	}
	data := []byte(ip.String())
	_, err = unix.Pwrite(fd, data, 0)
	if err == nil {
		err = unix.Ftruncate(fd, int64(len(data)))
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return ioError("write cursor", err)
	}
	return nil
}

// List reads every reservation file (a walk).
func (s *DiskStore) List() ([]Reservation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, ioError("list "+s.dir, err)
	}
	var out []Reservation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // lock, cursors, .nswire
		}
		owner, state, err := s.owner(ip)
		if err != nil {
			return nil, err
		}
		if state != ownerNone {
			out = append(out, Reservation{IP: ip, Owner: owner, Corrupt: state == ownerCorrupt})
		}
	}
	return out, nil
}

func (s *DiskStore) String() string { return fmt.Sprintf("DiskStore(%s)", s.dir) }
