package workload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/workload/workloadtest"
)

var west = spiffeid.RequireTrustDomainFromString("west.anchorage.test")

func TestScopeOf(t *testing.T) {
	for name, want := range map[string]dnsScope{
		"db.prod.svc":                       scopeLocal,
		"db.prod.svc.cluster.local":         scopeLocal,
		"db.prod.svc.clusterset.local":      scopeClusterset,
		"DB.Prod.SVC.ClusterSet.Local.":     scopeClusterset,
		"h.c1.db.prod.svc.clusterset.local": scopeClusterset,
		"clusterset.local":                  scopeLocal,
		"evilsvc.clusterset.local":          scopeLocal,
	} {
		if got := scopeOf(name); got != want {
			t.Errorf("scopeOf(%q) = %s, want %s", name, got, want)
		}
	}
}

// splitFiles writes a key and a chain file of a fresh leaf.
func splitFiles(t *testing.T, ca *workloadtest.CA, dir string) workloadtest.Leaf {
	t.Helper()
	l := ca.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
	for name, data := range map[string][]byte{"tls.key": l.KeyPEM, "tls.crt": l.ChainPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// The kubelet swaps the volume between the read of the key and the read of
// the chain: the old key and the new chain do not match, and the second
// read gets both new.
func TestSplitFilesSwappedBetweenReads(t *testing.T) {
	ca := workloadtest.NewSPIFFECA(t, west, "west-1")
	dir := t.TempDir()
	first := splitFiles(t, ca, dir)
	s, err := New(t.Context(), Options{KeyFile: filepath.Join(dir, "tls.key"), CertificateChainFile: filepath.Join(dir, "tls.crt"), DisableWatch: true, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	second := splitFiles(t, ca, dir)
	stale := true
	s.readFile = func(path string) ([]byte, error) {
		if stale && strings.HasSuffix(path, "tls.key") {
			stale = false
			return first.KeyPEM, nil // read before the swap
		}
		return os.ReadFile(path)
	}
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload across a swap: %v", err)
	}
	if got := s.Certificate().Leaf.SerialNumber; got.Cmp(second.Serial) != 0 {
		t.Errorf("serial %s, want the new %s", got, second.Serial)
	}

	// A key that really does not match is still an error.
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), first.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); !errors.Is(err, errKeyMismatch) {
		t.Errorf("Reload with a mismatched key: %v, want %v", err, errKeyMismatch)
	}
}

// The watch ends with the context, not only with Close.
func TestWatchEndsWithContext(t *testing.T) {
	ca := workloadtest.NewSPIFFECA(t, west, "west-1")
	dir := t.TempDir()
	splitFiles(t, ca, dir)
	ctx, cancel := context.WithCancel(t.Context())
	s, err := New(ctx, Options{KeyFile: filepath.Join(dir, "tls.key"), CertificateChainFile: filepath.Join(dir, "tls.crt"), RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for !errors.Is(s.watcher.Add(dir), fsnotify.ErrClosed) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher is still open after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Without inotify (its limits reached), the periodic refresh carries on
// alone; with the refresh disabled too, nothing would reload: New fails.
func TestNoWatcher(t *testing.T) {
	ca := workloadtest.NewSPIFFECA(t, west, "west-1")
	dir := t.TempDir()
	splitFiles(t, ca, dir)
	noInotify := func() (*fsnotify.Watcher, error) { return nil, errors.New("too many open files") }
	var (
		mu       sync.Mutex
		reported []error
	)
	opts := Options{KeyFile: filepath.Join(dir, "tls.key"), CertificateChainFile: filepath.Join(dir, "tls.crt"), RefreshInterval: 20 * time.Millisecond,
		OnError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }}
	s, err := newSource(t.Context(), opts, noInotify)
	if err != nil {
		t.Fatalf("New without inotify: %v", err)
	}
	defer s.Close()
	mu.Lock()
	if len(reported) != 1 || !strings.Contains(reported[0].Error(), "too many open files") || !strings.Contains(reported[0].Error(), "re-reading them every 20ms") {
		t.Errorf("reported %v, want the watch error and the fallback", reported)
	}
	mu.Unlock()
	next := splitFiles(t, ca, dir)
	deadline := time.Now().Add(10 * time.Second)
	for s.Certificate().Leaf.SerialNumber.Cmp(next.Serial) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the periodic refresh did not pick up the new certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}

	opts.RefreshInterval = -1
	if s, err := newSource(t.Context(), opts, noInotify); err == nil {
		s.Close()
		t.Error("New without inotify and without a periodic refresh succeeded")
	} else if !strings.Contains(err.Error(), "RefreshInterval") {
		t.Errorf("error %q does not say to set a RefreshInterval", err)
	}
}
