package localcluster

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
)

// inCI reports whether $CI asks for tests that must not skip: any non-empty
// value other than "false" (GitHub Actions, GitLab and most others set "true").
func inCI() bool {
	v := strings.TrimSpace(os.Getenv("CI"))
	return v != "" && !strings.EqualFold(v, "false")
}

// RequireAssets returns the folder with kube-apiserver and etcd. When they are
// absent it skips t with a message saying how to get them, unless $CI is set
// (and not "false"), where it fails t instead: in CI a skipped integration test
// is a silently missing one.
func RequireAssets(t testing.TB) string {
	t.Helper()
	dir, err := AssetsDir()
	if err == nil {
		return dir
	}
	if errors.Is(err, ErrNoAssets) && !inCI() {
		t.Skipf("skipping: %v (set CI=true to make this a failure)", err)
	}
	t.Fatalf("kube-apiserver binaries are required: %v", err)
	return ""
}

// StartT starts a cluster for a test (after RequireAssets) and stops it in
// t.Cleanup; it fails the test on error. The cluster logs to t.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireAssets(t)
	if opts.Name == "" {
		opts.Name = t.Name()
	}
	// Not t.Context(): Start's context only covers the start itself, and
	// t.Context() would end it early in a helper called from a subtest.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctx = logr.NewContext(ctx, testr.NewWithInterface(t, testr.Options{Verbosity: 0}))
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting test cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping test cluster: %v", err)
		}
	})
	return c
}
