package kubeletsim

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// This file reproduces the kubelet's AtomicWriter
// (k8s.io/kubernetes/pkg/volume/util/atomic_writer.go) on Linux, minus
// ownership changes, so that file watchers in tests see what they would see on
// a node: the payload lives in a hidden timestamped folder, "..data" is a
// symlink to it that is swapped with one rename(2), and every user-visible
// top-level name is a symlink into "..data". A reader that opens
// <dir>/tls.crt after the swap gets the new file; one that opened it before
// keeps the old one. inotify watchers on <dir> see "..data" being replaced
// (IN_MOVED_TO), not writes to tls.crt.

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// fileProjection is one file of a volume payload.
type fileProjection struct {
	data []byte
	mode fs.FileMode
}

// writeAtomic projects payload into dir. Like the kubelet it writes nothing
// when every file already has the same content and no file has to go, so
// re-rendering an unchanged volume produces no file events. It reports whether
// a new version was published.
func writeAtomic(dir string, now time.Time, payload map[string]fileProjection) (bool, error) {
	// (1) validate and clean paths.
	clean := make(map[string]fileProjection, len(payload))
	for p, fp := range payload {
		if err := validatePath(p); err != nil {
			return false, err
		}
		clean[filepath.Clean(p)] = fp
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, fmt.Errorf("creating volume folder: %w", err)
	}

	// (2) the current timestamped folder, if any.
	dataDirPath := filepath.Join(dir, dataDirName)
	oldTsDir, err := os.Readlink(dataDirPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading the %s link: %w", dataDirName, err)
	}
	oldTsPath := ""
	if oldTsDir != "" {
		oldTsPath = filepath.Join(dir, oldTsDir)
	}

	// (3, 4) what would go away, and whether anything changed.
	var toRemove map[string]bool
	if oldTsPath != "" {
		if toRemove, err = pathsToRemove(clean, oldTsPath); err != nil {
			return false, err
		}
		changed, err := payloadChanged(clean, oldTsPath)
		if err != nil {
			return false, err
		}
		if !changed && len(toRemove) == 0 {
			// Up to date; still make sure the visible links exist
			// (kubernetes#121472).
			return false, createUserVisibleFiles(dir, clean)
		}
	}

	// (5, 6) a new timestamped folder with the payload.
	tsDir, err := os.MkdirTemp(dir, now.UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, fmt.Errorf("creating timestamped folder: %w", err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, fmt.Errorf("setting mode of %s: %w", tsDir, err)
	}
	for p, fp := range clean {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, fmt.Errorf("creating folder for %s: %w", p, err)
		}
		if err := os.WriteFile(full, fp.data, fp.mode); err != nil {
			return false, fmt.Errorf("writing %s: %w", p, err)
		}
		// WriteFile's mode is filtered by the umask; the kubelet forces it.
		if err := os.Chmod(full, fp.mode); err != nil {
			return false, fmt.Errorf("setting mode of %s: %w", p, err)
		}
	}

	// (8, 9) ..data_tmp -> new folder, renamed over ..data: the atomic swap.
	tsName := filepath.Base(tsDir)
	newDataDirPath := filepath.Join(dir, newDataDirName)
	_ = os.Remove(newDataDirPath) // a leftover from a crash in between
	if err := os.Symlink(tsName, newDataDirPath); err != nil {
		_ = os.RemoveAll(tsDir)
		return false, fmt.Errorf("creating the %s link: %w", newDataDirName, err)
	}
	if err := os.Rename(newDataDirPath, dataDirPath); err != nil {
		_ = os.Remove(newDataDirPath)
		_ = os.RemoveAll(tsDir)
		return false, fmt.Errorf("swapping the %s link: %w", dataDirName, err)
	}

	// (10) visible links, (11) stale visible links, (12) the old folder.
	if err := createUserVisibleFiles(dir, clean); err != nil {
		return true, err
	}
	for p := range toRemove {
		if strings.Contains(p, string(os.PathSeparator)) {
			continue // only top-level names are links
		}
		if err := os.Remove(filepath.Join(dir, p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("removing stale %s: %w", p, err)
		}
	}
	if oldTsPath != "" {
		if err := os.RemoveAll(oldTsPath); err != nil {
			return true, fmt.Errorf("removing old data folder %s: %w", oldTsDir, err)
		}
	}
	return true, nil
}

// validatePath rejects what the kubelet rejects: absolute paths, ".."
// elements, names starting with "..", over-long names.
func validatePath(p string) error {
	if p == "" {
		return errors.New("invalid path: must not be empty")
	}
	if filepath.IsAbs(p) {
		return fmt.Errorf("invalid path %q: must be relative", p)
	}
	if len(p) > 4096 {
		return fmt.Errorf("invalid path %q: longer than 4096 characters", p)
	}
	items := strings.Split(p, string(os.PathSeparator))
	for _, item := range items {
		if item == ".." {
			return fmt.Errorf("invalid path %q: must not contain '..'", p)
		}
		if len(item) > 255 {
			return fmt.Errorf("invalid path %q: file names must be at most 255 characters", p)
		}
	}
	if strings.HasPrefix(items[0], "..") && len(items[0]) > 2 {
		return fmt.Errorf("invalid path %q: must not start with '..'", p)
	}
	return nil
}

func payloadChanged(payload map[string]fileProjection, oldTsDir string) (bool, error) {
	for p, fp := range payload {
		old, err := os.ReadFile(filepath.Join(oldTsDir, p))
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading current %s: %w", p, err)
		}
		if !bytes.Equal(old, fp.data) {
			return true, nil
		}
	}
	return false, nil
}

// pathsToRemove lists the paths of the current version that the payload no
// longer has (parents of new files excluded).
func pathsToRemove(payload map[string]fileProjection, oldTsDir string) (map[string]bool, error) {
	keep := map[string]bool{}
	for p := range payload {
		for sub := p; sub != "." && sub != ""; sub = filepath.Dir(sub) {
			keep[sub] = true
		}
	}
	remove := map[string]bool{}
	err := filepath.WalkDir(oldTsDir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(oldTsDir, path)
		if err != nil || rel == "." {
			return err
		}
		if !keep[rel] {
			remove[rel] = true
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing current data folder: %w", err)
	}
	return remove, nil
}

// createUserVisibleFiles links each top-level name to ..data/<name>.
func createUserVisibleFiles(dir string, payload map[string]fileProjection) error {
	for p := range payload {
		top, _, _ := strings.Cut(p, string(os.PathSeparator))
		visible := filepath.Join(dir, top)
		if _, err := os.Readlink(visible); err == nil || !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDirName, top), visible); err != nil {
			return fmt.Errorf("linking %s: %w", top, err)
		}
	}
	return nil
}
