// Package benchutil has what the benchmark commands share: medians and
// progress lines.
package benchutil

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

// QuietLogs keeps the components' logs (client-go, controller-runtime) off
// the terminal, so a benchmark prints only progress and figures; the
// in-process components log to components (logr.Discard() for none;
// controller-runtime takes only the first logger it is given).
func QuietLogs(components logr.Logger) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
	klog.SetLogger(logr.Discard())
	ctrl.SetLogger(components)
}

// Median of xs (the mean of the middle two for an even count).
func Median[T time.Duration | float64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Interruptible returns ctx cancelled on Ctrl-C or SIGTERM, so that a
// benchmark returns and its deferred stops run: envtest starts kube-apiserver
// and etcd in their own process group, out of reach of the terminal's
// SIGINT, and they would otherwise outlive the benchmark with etcd's data
// left in /dev/shm. Once cancelled, the signals kill again, so a second
// Ctrl-C still ends a benchmark stuck in its cleanup.
func Interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// Progress prints a progress line on stderr, so stdout holds only figures.
func Progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// StartCluster builds the apiserver binaries if needed and starts one
// kube-apiserver with its etcd on tmpfs when there is one. stop stops both
// and removes etcd's data.
func StartCluster(ctx context.Context, scheme *runtime.Scheme) (cl *localcluster.Cluster, stop func(), err error) {
	return StartClusterWith(ctx, localcluster.Options{Name: "bench", Scheme: scheme})
}

// StartClusterWith is StartCluster with more options (CRDs, say); the
// data folder is chosen here.
func StartClusterWith(ctx context.Context, opts localcluster.Options) (cl *localcluster.Cluster, stop func(), err error) {
	if _, err := localcluster.EnsureAssets(ctx, os.Stderr); err != nil {
		return nil, nil, err
	}
	etcdDir, err := etcdDir()
	if err != nil {
		return nil, nil, err
	}
	Progress("starting kube-apiserver (etcd data in %s)", cmp.Or(etcdDir, "a temporary folder"))
	opts.DataDir = etcdDir
	cl, err = localcluster.Start(ctx, opts)
	if err != nil {
		if etcdDir != "" {
			_ = os.RemoveAll(etcdDir)
		}
		return nil, nil, err
	}
	return cl, func() {
		_ = cl.Stop()
		if etcdDir != "" {
			_ = os.RemoveAll(etcdDir)
		}
	}, nil
}

// etcdDir returns a fresh etcd data folder on tmpfs (/dev/shm) when the
// machine has one, so that disk latency jitter does not drown what is being
// measured; "" (a temporary folder on disk) otherwise.
func etcdDir() (string, error) {
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		return "", nil
	}
	return os.MkdirTemp("/dev/shm", "anchorage-bench-etcd-")
}

// Counts parses a flag holding a comma-separated list of counts, each at
// least least; name is the flag's, for the error.
func Counts(name, list string, least int) ([]int, error) {
	var ns []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < least {
			return nil, fmt.Errorf("-%s: %q is not a count of at least %d", name, s, least)
		}
		ns = append(ns, n)
	}
	return ns, nil
}
