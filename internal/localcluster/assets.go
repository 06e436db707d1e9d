package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// KubernetesVersion is the version of kube-apiserver that hack/envtest-assets.sh
// builds and that the cache folder is keyed on.
const KubernetesVersion = "v1.37.1"

// ErrNoAssets is returned by AssetsDir when neither $KUBEBUILDER_ASSETS nor the
// cache folder holds kube-apiserver and etcd.
var ErrNoAssets = errors.New("kube-apiserver and etcd binaries not found: run hack/envtest-assets.sh (about 5 minutes the first time) or set KUBEBUILDER_ASSETS")

// assetsScript is the script that builds the binaries, relative to the module root.
const assetsScript = "hack/envtest-assets.sh"

// AssetsDir returns the folder with kube-apiserver and etcd: $KUBEBUILDER_ASSETS
// if set, else the cache folder hack/envtest-assets.sh uses
// (${ANCHORAGE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/anchorage/envtest}/k8s-v1.37.1-<go version>),
// else ("", ErrNoAssets).
//
// The script keys the cache on the Go version that built the binaries. A test
// binary built by another patch release of Go would not find them under its own
// version, although any build works; so when the exact folder is missing, the
// newest complete k8s-v1.37.1-go* folder is used.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if hasBinaries(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s has no executable kube-apiserver and etcd: %w", dir, ErrNoAssets)
	}
	root, err := cacheRoot()
	if err != nil {
		return "", fmt.Errorf("%w (%v)", ErrNoAssets, err)
	}
	exact := filepath.Join(root, "k8s-"+KubernetesVersion+"-"+goVersion())
	if hasBinaries(exact) {
		return exact, nil
	}
	// The script builds in "<folder>.build.XXXXXX" (older versions in
	// "<folder>.tmp") and renames it into place once both binaries are
	// built: a build in progress never matches.
	candidates, _ := filepath.Glob(filepath.Join(root, "k8s-"+KubernetesVersion+"-go*"))
	sort.Sort(sort.Reverse(sort.StringSlice(candidates)))
	for _, dir := range candidates {
		if !strings.HasSuffix(dir, ".tmp") && !strings.Contains(filepath.Base(dir), ".build.") && hasBinaries(dir) {
			return dir, nil
		}
	}
	return "", ErrNoAssets
}

// cacheRoot mirrors the script's
// ${ANCHORAGE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/anchorage/envtest}.
// os.UserCacheDir is not used because it differs from the script on macOS.
func cacheRoot() (string, error) {
	if dir := os.Getenv("ANCHORAGE_ASSETS_CACHE"); dir != "" {
		return dir, nil
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home := os.Getenv("HOME")
		if home == "" {
			return "", errors.New("neither XDG_CACHE_HOME nor HOME is set")
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "anchorage", "envtest"), nil
}

// goVersion is what `go env GOVERSION` prints for the toolchain that built this
// binary, without GOEXPERIMENT suffixes (e.g. "go1.26.8").
func goVersion() string {
	v, _, _ := strings.Cut(runtime.Version(), " ")
	return v
}

func hasBinaries(dir string) bool {
	for _, name := range []string{"kube-apiserver", "etcd"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// EnsureAssets is AssetsDir, but when the binaries are absent it runs
// hack/envtest-assets.sh (found by walking up from the working directory to the
// folder with go.mod), streams its progress to progress, and returns the folder
// it prints. Cancelling ctx stops the build (the whole process group, since the
// script's go build children would otherwise keep compiling).
func EnsureAssets(ctx context.Context, progress io.Writer) (string, error) {
	if dir, err := AssetsDir(); err == nil {
		return dir, nil
	} else if !errors.Is(err, ErrNoAssets) || os.Getenv("KUBEBUILDER_ASSETS") != "" {
		// A wrong KUBEBUILDER_ASSETS is a user error that building cannot fix.
		return "", err
	}
	if progress == nil {
		progress = io.Discard
	}
	log := logr.FromContextOrDiscard(ctx)

	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("building kube-apiserver and etcd: %w", err)
	}
	script := filepath.Join(root, assetsScript)
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("building kube-apiserver and etcd: %s not found under the module root %s: %w", assetsScript, root, err)
	}
	log.Info("building kube-apiserver and etcd from source (first time only)", "script", script)

	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = progress
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the process group this command leads, i.e. only
		// what this call started.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s failed (its output is above): %w", script, err)
	}
	dir := lastLine(stdout.String())
	if !hasBinaries(dir) {
		return "", fmt.Errorf("%s printed %q, which has no kube-apiserver and etcd", script, dir)
	}
	return dir, nil
}

// moduleRoot walks up from the working directory to the folder holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or its parents: run from inside the anchorage repository")
		}
		dir = parent
	}
}

func lastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}
