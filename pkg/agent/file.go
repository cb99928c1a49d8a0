package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeAtomic makes dir/name hold data with the given mode, and reports
// whether it had to write. The content goes to a temp file in the same
// directory that is then renamed over the old one: a runtime reading the
// conflist, or exec'ing a plugin binary, sees the old file or the new one,
// never a half-written one, and a running binary never makes the write
// fail with "text file busy" (rename replaces the name, not the inode).
// An identical file is left alone, so its mtime and inode stay.
func writeAtomic(dir, name string, data []byte, mode fs.FileMode) (bool, error) {
	path := filepath.Join(dir, name)
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return false, err
	}
	if err := fill(tmp, data, mode); err != nil {
		os.Remove(tmp.Name())
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return false, err
	}
	return true, nil
}

// fill writes data into f, sets its mode (CreateTemp makes 0600) and closes it.
func fill(f *os.File, data []byte, mode fs.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	return errors.Join(err, f.Close())
}
