package agent

import (
	"fmt"
	"os"
	"path/filepath"
)

// Install copies the named binaries from srcDir into dstDir, each one
// atomically (see writeAtomic), and returns the names it had to write.
// A binary whose content is already in place is skipped.
func Install(srcDir, dstDir string, names ...string) ([]string, error) {
	var written []string
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(srcDir, name))
		if err != nil {
			return written, fmt.Errorf("install %s: %w", name, err)
		}
		changed, err := writeAtomic(dstDir, name, data, 0o755)
		if err != nil {
			return written, fmt.Errorf("install %s: %w", name, err)
		}
		if changed {
			written = append(written, name)
		}
	}
	return written, nil
}
