package app

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// CAOptions are the flags of `member-agent ca <action>`.
type CAOptions struct {
	// Action is status, rotate, promote or abort.
	Action     string
	Signer     string
	Namespace  string
	Kubeconfig string
	Wait       time.Duration
}

// caActions are the actions of `member-agent ca`.
func caActions() []string {
	return []string{"status", capool.RequestRotate, capool.RequestPromote, capool.RequestAbort}
}

// NewCAOptions returns the defaults.
func NewCAOptions(action string) *CAOptions {
	return &CAOptions{Action: action, Signer: "all", Namespace: "anchorage-system", Wait: time.Minute}
}

// AddFlags registers the flags on fs.
func (o *CAOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Signer, "signer", o.Signer, "Signer whose CA pool to act on: anchorage.dev/spiffe, anchorage.dev/service-dns, their short names spiffe and service-dns, or all.")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "The agent's namespace, where the CA pool Secrets live.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig of the member cluster. Default: in-cluster config, then $KUBECONFIG.")
	fs.DurationVar(&o.Wait, "wait", o.Wait, "How long to wait for the agent to carry out the request (0: do not wait).")
}

// signerNames resolves --signer.
func (o *CAOptions) signerNames() ([]string, error) {
	if o.Signer == "all" {
		return signers.SignerNames(), nil
	}
	for _, s := range signers.SignerNames() {
		if o.Signer == s || o.Signer == signers.Slug(s) {
			return []string{s}, nil
		}
	}
	return nil, fmt.Errorf("--signer %q: want %s, their short names, or all", o.Signer, strings.Join(signers.SignerNames(), ", "))
}

// CAMain runs `member-agent ca <action>`: status prints each pool; the
// other actions annotate the pool Secret for the agent (the leader alone
// writes pools), wait for it to act, and print the result.
func CAMain(ctx context.Context, opts *CAOptions, out io.Writer) error {
	if !slices.Contains(caActions(), opts.Action) {
		return fmt.Errorf("usage: member-agent ca <%s> [--signer S] [--kubeconfig F]; %q is not an action", strings.Join(caActions(), "|"), opts.Action)
	}
	names, err := opts.signerNames()
	if err != nil {
		return err
	}
	cfg, err := cmdutil.RESTConfig(opts.Kubeconfig)
	if err != nil {
		return err
	}
	return CA(ctx, cfg, opts, names, out)
}

// CA carries out opts.Action on the pools of names in the cluster of cfg.
func CA(ctx context.Context, cfg *rest.Config, opts *CAOptions, names []string, out io.Writer) error {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	if opts.Action != "status" {
		for _, s := range names {
			if err := capool.Request(ctx, c, opts.Namespace, s, opts.Action); err != nil {
				return err
			}
			fmt.Fprintf(out, "asked the agent to %s the %s CA pool\n", opts.Action, s)
		}
		if opts.Wait > 0 {
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, opts.Wait, true, func(ctx context.Context) (bool, error) {
				for _, s := range names {
					var secret corev1.Secret
					if err := c.Get(ctx, client.ObjectKey{Namespace: opts.Namespace, Name: capool.SecretName(s)}, &secret); err != nil {
						return false, nil
					}
					if _, pending := secret.Annotations[capool.RequestAnnotation]; pending {
						return false, nil
					}
				}
				return true, nil
			})
			if err != nil {
				return fmt.Errorf("the agent has not acted on the request within --wait %s: is it running? Its Events on the pool Secret and its log say why", opts.Wait)
			}
		}
	}
	return printPools(ctx, c, opts.Namespace, names, out)
}

// printPools prints every CA of the pools: state, key id, validity.
func printPools(ctx context.Context, c client.Client, namespace string, names []string, out io.Writer) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SIGNER\tSTATE\tSUBJECT-KEY-ID\tNOT-AFTER\tSINCE")
	now := time.Now()
	for _, s := range names {
		var secret corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: capool.SecretName(s)}, &secret); err != nil {
			return fmt.Errorf("reading the %s pool: %w", s, err)
		}
		pool, err := signers.UnmarshalPool(secret.Data[capool.PoolKey])
		if err != nil {
			return fmt.Errorf("Secret %s/%s: %w", namespace, secret.Name, err)
		}
		for _, ca := range pool.CAs {
			since := "-"
			switch {
			case ca.State == signers.StateRetired:
				since = fmt.Sprintf("retired %s ago, published until %s", now.Sub(ca.RetiredAt).Round(time.Second), ca.RetiredAt.Add(signers.MaxLeafLifetime).UTC().Format(time.RFC3339))
			case ca.State == signers.StateNext:
				since = fmt.Sprintf("published %s ago, waiting for every federated member to apply it", now.Sub(ca.AddedAt).Round(time.Second))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s, ca.State, ca.SKID(), ca.Certificate.NotAfter.UTC().Format(time.RFC3339), since)
		}
	}
	return tw.Flush()
}
