package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"

	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/sandbox"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

// Options are the sandbox's flags.
type Options struct {
	StateDir string
	Serve    bool
}

// NewOptions returns the defaults.
func NewOptions() *Options { return &Options{} }

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "Folder for the apiservers' data, kubeconfigs, the hub's CA and sandbox.json (written once everything is ready). Default: a fresh temporary folder, printed.")
	fs.BoolVar(&o.Serve, "serve", o.Serve, "Keep everything running after the demo until interrupted (Ctrl-C).")
}

// State is sandbox.json: what other tools need to drive the sandbox.
type State struct {
	HubURL        string        `json:"hubURL"`
	HubCAFile     string        `json:"hubCAFile"`
	HubKubeconfig string        `json:"hubKubeconfig"`
	Members       []MemberState `json:"members"`
}

// MemberState is one member in sandbox.json.
type MemberState struct {
	Name        string `json:"name"`
	Kubeconfig  string `json:"kubeconfig"`
	Issuer      string `json:"issuer"`
	TrustDomain string `json:"trustDomain"`
}

// LogFile creates the state folder (a fresh temporary one unless
// --state-dir is set) and opens sandbox.log in it for the components' logs.
func (o *Options) LogFile() (io.Writer, error) {
	if o.StateDir == "" {
		dir, err := os.MkdirTemp("", "anchorage-sandbox-")
		if err != nil {
			return nil, err
		}
		o.StateDir = dir
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(o.StateDir, "sandbox.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// Run runs the sandbox, printing what happens to out. Everything it
// started is stopped when it returns; a cancelled ctx (Ctrl-C) is an
// interruption, not a failure.
func Run(ctx context.Context, opts *Options, out io.Writer) error {
	_, err := run(ctx, opts, out)
	return interrupted(ctx, err)
}

// Interrupt is what cmd/sandbox prints while it stops after Ctrl-C: every
// apiserver and etcd must be stopped, so a second Ctrl-C does not abandon
// them.
func Interrupt(out io.Writer) cmdutil.Interrupt {
	return cmdutil.Interrupt{
		Out:           out,
		Stopping:      "==> stopping the clusters…",
		StillStopping: "    still stopping the clusters (apiservers, then etcd); they would keep running if the sandbox exited now",
		Stopped:       "==> stopped",
	}
}

// interrupted reports an error of a run whose ctx was cancelled as the
// interruption it is (what failed then is the cancellation's doing; the
// components' logs keep the details).
func interrupted(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	logr.FromContextOrDiscard(ctx).Info("Stopped by an interruption", "error", err.Error())
	return fmt.Errorf("interrupted: %w", context.Cause(ctx))
}

// caPromotionDelay is the agents' --ca-promotion-delay in the sandbox:
// comfortably longer than the kubelet simulators' lag in re-projecting a
// changed trust bundle (at most 1.5 s, internal/sandbox), short enough for
// the demo's rotation to take seconds.
const caPromotionDelay = 3 * time.Second

// run is Run, returning what the demo saw (for tests).
func run(ctx context.Context, opts *Options, out io.Writer) (*sandbox.DemoResult, error) {
	p := sandbox.Progress{Out: out}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	began := time.Now()

	dir := opts.StateDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "anchorage-sandbox-"); err != nil {
			return nil, err
		}
	}
	if dir, err := filepath.Abs(dir); err == nil {
		opts.StateDir = dir
	}
	dir = opts.StateDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "sandbox.log")
	p.Step("state in %s (components log to sandbox.log there)", dir)

	p.Step("kube-apiserver and etcd v%s (built from the Go module proxy the first time, about 5 minutes; then cached)", strings.TrimPrefix(localcluster.KubernetesVersion, "v"))
	if _, err := localcluster.EnsureAssets(ctx, out); err != nil {
		return nil, err
	}
	// The components log to the context's logger: sandbox.log under
	// cmd/sandbox, nowhere in tests.
	log := logr.FromContextOrDiscard(ctx)

	p.Step("starting the hub cluster and the hub")
	hub, err := sandbox.StartHub(ctx, sandbox.HubOptions{Dir: dir, Log: log})
	if err != nil {
		return nil, err
	}
	defer hub.Stop()
	p.Detail("hub: %s (its development CA: %s)", hub.URL, hub.CAFile)

	state := State{HubURL: hub.URL, HubCAFile: hub.CAFile, HubKubeconfig: filepath.Join(dir, "hub.kubeconfig")}
	if err := hub.Cluster.WriteKubeconfig(state.HubKubeconfig); err != nil {
		return nil, err
	}
	var members []*sandbox.Member
	// east runs the demo's client, west its server; each federates with
	// the other's trust domain, both are in the clusterset (the default).
	for _, m := range []struct{ name, td, peer string }{
		{"east", "east.anchorage.test", "west.anchorage.test"},
		{"west", "west.anchorage.test", "east.anchorage.test"},
	} {
		p.Step("starting member %s (trust domain %s, issuer %s/clusters/%s) and joining it to the hub", m.name, m.td, hub.URL, m.name)
		mem, err := hub.AddMember(ctx, sandbox.MemberOptions{
			Name: m.name, TrustDomain: m.td, Dir: dir, Log: log, NodeAuthorization: true,
			Spec:  func(s *hubv1.MemberClusterSpec) { s.FederatesWith = []string{m.peer} },
			Agent: []func(*agentapp.Options){func(o *agentapp.Options) { o.CAPromotionDelay = caPromotionDelay }},
		})
		if err != nil {
			return nil, err
		}
		defer mem.Stop()
		if err := hub.WaitReady(ctx, m.name, 2*time.Minute); err != nil {
			return nil, err
		}
		kc := filepath.Join(dir, m.name+".kubeconfig")
		if err := mem.WriteKubeconfig(kc); err != nil {
			return nil, err
		}
		p.Detail("%s joined: its agent signs for anchorage.dev/spiffe and anchorage.dev/service-dns, reported its anchors and JWKS, and federates with %s", m.name, m.peer)
		members = append(members, mem)
		state.Members = append(state.Members, MemberState{Name: m.name, Kubeconfig: kc, Issuer: mem.Issuer, TrustDomain: m.td})
	}
	data, _ := json.MarshalIndent(state, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "sandbox.json"), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	p.Step("ready in %s; sandbox.json written", time.Since(began).Round(time.Second))

	east, west := members[0], members[1]
	res, err := sandbox.RunDemo(ctx, east, west, sandbox.DemoOptions{Dir: dir, Out: out})
	if err != nil {
		return res, fmt.Errorf("the cross-cluster demo failed: %w (the components' logs are in %s)", err, logFile)
	}

	p.Step("what the hub serves for east, under east's issuer (the same commands work while --serve runs):")
	issuer := east.Issuer
	for _, u := range []string{
		issuer + "/.well-known/openid-configuration",
		issuer + "/openid/v1/jwks",
		issuer + "/.well-known/spiffe-bundle",
		issuer + "/.well-known/anchorage/trust-bundles/service-dns.pem",
		hub.URL + "/trust-domains/west.anchorage.test/bundle",
	} {
		say("\n$ curl --cacert %s %s", hub.CAFile, u)
		resp, body, err := hub.Get(ctx, u)
		if err != nil {
			return res, err
		}
		doc, err := document(u, resp, body)
		if err != nil {
			return res, err
		}
		say("%s", doc)
	}
	say("")

	if !opts.Serve {
		p.Step("done in %s; stopping (run with --serve to keep it running)", time.Since(began).Round(time.Second))
		return res, nil
	}
	p.Step("serving until interrupted: kubectl --kubeconfig %s get memberclusters", state.HubKubeconfig)
	<-ctx.Done()
	return res, nil
}

// document is what the sandbox prints of a document the hub serves: only
// a 200 answer is the document.
func document(url string, resp *http.Response, body []byte) (string, error) {
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: the hub answered %s, not 200 OK: %s (the hub's log in sandbox.log says why)", url, resp.Status, shorten(string(body), resp.Header.Get("Content-Type")))
	}
	return shorten(string(body), resp.Header.Get("Content-Type")), nil
}

// shorten keeps a terminal readable: long PEM and base64 are elided.
func shorten(body, contentType string) string {
	const max = 900
	body = strings.TrimSpace(body)
	if len(body) <= max {
		return body
	}
	return body[:max] + fmt.Sprintf(" … (%d bytes, %s)", len(body), contentType)
}
