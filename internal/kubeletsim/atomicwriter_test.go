package kubeletsim

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	data := func() string {
		t.Helper()
		l, err := os.Readlink(filepath.Join(dir, "..data"))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	changed, err := writeAtomic(dir, now, map[string]fileProjection{
		"tls.crt":    {data: []byte("cert-1"), mode: 0o644},
		"sub/ca.pem": {data: []byte("ca-1"), mode: 0o600},
	})
	if err != nil || !changed {
		t.Fatalf("first write: changed %v, err %v", changed, err)
	}
	v1 := data()
	if !strings.HasPrefix(v1, "..2026_01_02_03_04_05.") {
		t.Errorf("..data -> %s, want a ..2026_01_02_03_04_05.* folder", v1)
	}
	for name, want := range map[string]string{"tls.crt": "..data/tls.crt", "sub": "..data/sub"} {
		if l, err := os.Readlink(filepath.Join(dir, name)); err != nil || l != want {
			t.Errorf("%s -> %q, %v; want %s", name, l, err, want)
		}
	}
	if read("tls.crt") != "cert-1" || read("sub/ca.pem") != "ca-1" {
		t.Error("contents wrong after the first write")
	}
	if fi, _ := os.Stat(filepath.Join(dir, v1, "sub/ca.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("sub/ca.pem mode %v, want 0600", fi.Mode().Perm())
	}

	// Same content: nothing happens (no new folder, no events).
	changed, err = writeAtomic(dir, now.Add(time.Minute), map[string]fileProjection{
		"tls.crt":    {data: []byte("cert-1"), mode: 0o644},
		"sub/ca.pem": {data: []byte("ca-1"), mode: 0o600},
	})
	if err != nil || changed || data() != v1 {
		t.Fatalf("unchanged write: changed %v, err %v, ..data %s (was %s)", changed, err, data(), v1)
	}

	// A change is published by renaming ..data_tmp over ..data, which a
	// watcher of the folder sees as a create of ..data.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	changed, err = writeAtomic(dir, now.Add(2*time.Minute), map[string]fileProjection{
		"tls.crt": {data: []byte("cert-2"), mode: 0o644},
		"new.pem": {data: []byte("new"), mode: 0o644},
	})
	if err != nil || !changed {
		t.Fatalf("second write: changed %v, err %v", changed, err)
	}
	if read("tls.crt") != "cert-2" || read("new.pem") != "new" {
		t.Error("contents wrong after the second write")
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("sub still visible after it left the payload: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, v1)); !os.IsNotExist(err) {
		t.Errorf("old folder %s not removed: %v", v1, err)
	}
	var events []string
	timeout := time.After(2 * time.Second)
collect:
	for {
		select {
		case ev := <-w.Events:
			events = append(events, filepath.Base(ev.Name)+":"+ev.Op.String())
		case <-timeout:
			break collect
		default:
			if len(events) > 0 && slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, "..data:") }) {
				break collect
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("watcher events on the second write: %v", events)
	if !slices.Contains(events, "..data:CREATE") {
		t.Errorf("watcher events %v: want ..data:CREATE (the rename)", events)
	}
	if slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, "tls.crt:WRITE") }) {
		t.Errorf("watcher saw tls.crt written in place: %v", events)
	}

	for _, bad := range []string{"/abs", "../up", "..hidden", "a/../b"} {
		if _, err := writeAtomic(dir, now, map[string]fileProjection{bad: {data: nil, mode: 0o644}}); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}
