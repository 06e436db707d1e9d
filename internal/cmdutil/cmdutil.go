package cmdutil

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Options is a binary's flag set owner.
type Options interface {
	AddFlags(*pflag.FlagSet)
}

// Option changes Main.
type Option func(*mainOptions)

type mainOptions struct {
	logTo func() (io.Writer, error)
	args  []string
}

// Args parses args instead of the process's arguments (a subcommand's).
func Args(args []string) Option {
	return func(m *mainOptions) { m.args = args }
}

// LogTo sends the components' logs to the writer f returns (called after
// the flags are parsed), for commands whose terminal output is for people.
func LogTo(f func() (io.Writer, error)) Option {
	return func(m *mainOptions) { m.logTo = f }
}

// Main parses the flags of opts plus the logging flags, sets the logger, and
// runs run until SIGTERM/SIGINT; an error is printed and exits 1.
func Main(name string, opts Options, run func(ctx context.Context) error, options ...Option) {
	var mo mainOptions
	for _, o := range options {
		o(&mo)
	}
	fs := pflag.NewFlagSet(name, pflag.ExitOnError)
	opts.AddFlags(fs)
	zapOpts := zap.Options{}
	logFlags := flag.NewFlagSet("log", flag.ContinueOnError)
	zapOpts.BindFlags(logFlags)
	fs.AddGoFlagSet(logFlags)
	args := os.Args[1:]
	if mo.args != nil {
		args = mo.args
	}
	_ = fs.Parse(args)
	if mo.logTo != nil {
		w, err := mo.logTo()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		zapOpts.DestWriter = w
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), ctrl.Log.WithName(name))
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// RESTConfig loads --kubeconfig when set, else the in-cluster config, else
// $KUBECONFIG or ~/.kube/config.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration: run in a cluster or pass --kubeconfig: %w", err)
	}
	return cfg, nil
}

// EveryReplica is a manager runnable that also runs on replicas that are
// not the leader (servers, metrics).
type EveryReplica manager.RunnableFunc

// Start implements manager.Runnable.
func (f EveryReplica) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (EveryReplica) NeedLeaderElection() bool { return false }
