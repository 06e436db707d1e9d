package cmdutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

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
	logTo     func() (io.Writer, error)
	args      []string
	interrupt *Interrupt
}

// Interrupt is what a command prints while it stops after SIGINT/SIGTERM.
type Interrupt struct {
	Out io.Writer
	// Stopping is printed at the first signal, StillStopping at each later
	// one, Stopped once run has returned.
	Stopping, StillStopping, Stopped string
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

// Interruptible replaces the default signal handling (a second signal
// exits at once) for commands that own child processes: the first
// SIGINT/SIGTERM prints i.Stopping and cancels run's context, later ones
// print i.StillStopping and nothing more, so run's deferred stops always
// complete (processes started in their own process group never see the
// terminal's Ctrl-C: an exit would leave them running). A run that then
// ends with the context's cancellation is reported as interrupted (exit
// status 130), not as a failure.
func Interruptible(i Interrupt) Option {
	return func(m *mainOptions) { m.interrupt = &i }
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

	if mo.interrupt == nil {
		ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), ctrl.Log.WithName(name))
		if err := run(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(runInterruptible(name, *mo.interrupt, run))
}

func runInterruptible(name string, i Interrupt, run func(ctx context.Context) error) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var signaled atomic.Bool
	go relaySignals(sigs, done, func() {
		signaled.Store(true)
		fmt.Fprintln(i.Out, i.Stopping)
		cancel()
	}, func() { fmt.Fprintln(i.Out, i.StillStopping) })
	err := run(ctrl.LoggerInto(ctx, ctrl.Log.WithName(name)))
	close(done)
	if signaled.Load() {
		fmt.Fprintln(i.Out, i.Stopped)
	}
	msg, code := outcome(err, signaled.Load())
	if msg != "" {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, msg)
	}
	return code
}

// relaySignals calls first at the first signal of sigs and more at every
// later one, until done closes. It never exits the process.
func relaySignals(sigs <-chan os.Signal, done <-chan struct{}, first, more func()) {
	for n := 0; ; n++ {
		select {
		case <-done:
			return
		case <-sigs:
			if n == 0 {
				first()
			} else {
				more()
			}
		}
	}
}

// outcome is what an interruptible run's end prints and its exit status:
// a cancellation after a signal is an interruption, not a failure.
func outcome(err error, signaled bool) (string, int) {
	switch {
	case err == nil:
		return "", 0
	case signaled && errors.Is(err, context.Canceled):
		return "interrupted", 130
	default:
		return err.Error(), 1
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
