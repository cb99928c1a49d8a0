package ipam

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ensureIndex rebuilds the index from the reservation files when it cannot
// be trusted: in a directory nswire has not indexed yet (a host-local
// directory, or one whose migration was interrupted), and at the first use
// in a new boot. Nothing is fsynced, so a machine crash may leave recent
// files missing, empty or torn, but it also ends every attachment made
// before it: after a reboot no reservation file can belong to a running
// container, and the rebuild settles unreadable ones as GC does, keeping
// every readable owner. A directory host-local wrote is only indexed:
// nothing tells which boot its files are from. The version file, naming
// the boot, is written last, so an interrupted rebuild runs again.
func (s *DiskStore) ensureIndex() error {
	want, err := indexVersion()
	if err != nil {
		return err
	}
	have, err := readSmall(filepath.Join(s.indexDir, versionFile))
	if err == nil && string(have) == want {
		return nil
	}
	indexed := err == nil
	if err := os.MkdirAll(s.indexDir, 0o700); err != nil {
		return ioError("create "+s.indexDir, err)
	}
	if err := s.rebuild(func(Attachment) bool { return true }, indexed); err != nil {
		return err
	}
	tmp, err := writeTemp(s.indexDir, "tmp.version", []byte(want))
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.indexDir, versionFile))
	}
	if err != nil {
		return ioError("write index version", err)
	}
	return nil
}

// indexVersion is the version file's content: the index format and the
// boot it was last checked in.
func indexVersion() (string, error) {
	data, err := readSmall(bootIDPath)
	if err != nil {
		return "", ioError("read boot ID", err)
	}
	return "1 " + strings.TrimSpace(string(data)) + "\n", nil
}

// GC releases every reservation whose owner keep rejects, settles corrupt
// reservation files and rewrites the index from the files. It keeps going
// on errors and reports them together.
func (s *DiskStore) GC(keep func(Attachment) bool) error {
	return s.rebuild(keep, true)
}

// rebuild derives the index from the reservation files, the authority.
// With gc, rejected owners are released and corrupt files are settled
// using the old index's claims; without (host-local's files), nothing is
// released.
func (s *DiskStore) rebuild(keep func(Attachment) bool, gc bool) error {
	claims, names, err := s.readIndexes()
	if err != nil {
		return err
	}
	res, err := s.List()
	if err != nil {
		return err
	}
	owned := map[Attachment][]netip.Addr{}
	var errs []error
	for _, r := range res {
		switch {
		case r.Corrupt && gc:
			errs = append(errs, s.settleCorrupt(r.IP, claims[r.IP], keep, owned))
		case r.Corrupt:
			// Might be live (host-local does not fsync); GC decides.
		case gc && !keep(r.Owner):
			if err := os.Remove(s.ipPath(r.IP)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, ioError("remove reservation "+r.IP.String(), err))
			}
		default:
			owned[r.Owner] = append(owned[r.Owner], r.IP)
		}
	}
	errs = append(errs, s.writeIndexes(owned, names))
	if err := errors.Join(errs...); err != nil {
		return ioError("rebuild index of "+s.dir, err)
	}
	return nil
}

// readIndexes returns which attachments each address is claimed by, and
// the names of all index files. Corrupt index files claim nothing.
func (s *DiskStore) readIndexes() (map[netip.Addr][]Attachment, map[string]bool, error) {
	entries, err := os.ReadDir(s.indexDir)
	if err != nil {
		return nil, nil, ioError("list "+s.indexDir, err)
	}
	claims := map[netip.Addr][]Attachment{}
	names := map[string]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), indexPrefix) {
			continue
		}
		names[e.Name()] = true
		data, err := os.ReadFile(filepath.Join(s.indexDir, e.Name()))
		if err != nil {
			continue
		}
		a, ips, err := decodeIndex(data)
		if err != nil || indexName(a) != e.Name() {
			continue
		}
		for _, ip := range ips {
			claims[ip] = append(claims[ip], a)
		}
	}
	return claims, names, nil
}

// settleCorrupt decides an unreadable reservation file. Nswire writes the
// index before a reservation file, so a live owner's index claims it: one
// kept claimant gets the file rewritten; no kept claimant means no live
// owner and the file goes; several are ambiguous and the file stays.
func (s *DiskStore) settleCorrupt(ip netip.Addr, claimants []Attachment, keep func(Attachment) bool, owned map[Attachment][]netip.Addr) error {
	var live []Attachment
	for _, a := range claimants {
		if keep(a) && !slices.Contains(live, a) {
			live = append(live, a)
		}
	}
	switch len(live) {
	case 0:
		if err := os.Remove(s.ipPath(ip)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	case 1:
		tmp, err := writeTemp(s.indexDir, "tmp.repair", encodeOwner(live[0]))
		if err == nil {
			err = os.Rename(tmp, s.ipPath(ip))
		}
		owned[live[0]] = append(owned[live[0]], ip)
		return err
	}
	return errors.New("corrupt reservation " + s.ipPath(ip) + " is claimed by several attachments; left reserved")
}

// writeIndexes makes the index match owned exactly.
func (s *DiskStore) writeIndexes(owned map[Attachment][]netip.Addr, existing map[string]bool) error {
	var errs []error
	want := map[string]bool{}
	for a, ips := range owned {
		if a.IfName == "" {
			continue // legacy host-local entries: no ifname to index by
		}
		name := indexName(a)
		want[name] = true
		slices.SortFunc(ips, netip.Addr.Compare)
		errs = append(errs, s.writeIndexIfChanged(name, encodeIndex(a, ips)))
	}
	for name := range existing {
		if !want[name] {
			if err := os.Remove(filepath.Join(s.indexDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (s *DiskStore) writeIndexIfChanged(name string, data []byte) error {
	path := filepath.Join(s.indexDir, name)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp, err := writeTemp(s.indexDir, "tmp.index", data)
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
