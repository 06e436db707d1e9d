package app

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/pflag"

	"github.com/anchorage-dev/anchorage/pkg/federation"
)

// MaxLongPollTimeout is the longest --long-poll-timeout: member agents
// wait 90 s for an answer, and the hub's 204 must reach them well before.
const MaxLongPollTimeout = 75 * time.Second

// Options are the hub's flags.
type Options struct {
	ExternalURL          string
	ListenAddress        string
	TLSCertFile          string
	TLSKeyFile           string
	DevCAFile            string
	BundleEndpointCAFile string
	Namespace            string
	Kubeconfig           string
	JoinTokenTTL         time.Duration
	ReportLease          time.Duration
	MaxBodyBytes         int64
	LongPollTimeout      time.Duration
	Profiling            bool
	MaxConcurrentWrites  int
	LeaderElect          bool
	KubeAPIQPS           float32
	KubeAPIBurst         int

	LeaderElectionLeaseDuration time.Duration
	LeaderElectionRenewDeadline time.Duration
	LeaderElectionRetryPeriod   time.Duration
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		ListenAddress:               ":8443",
		Namespace:                   "anchorage-hub",
		JoinTokenTTL:                24 * time.Hour,
		ReportLease:                 2 * time.Minute,
		MaxBodyBytes:                federation.MaxBodyBytes,
		LongPollTimeout:             60 * time.Second,
		MaxConcurrentWrites:         32,
		LeaderElect:                 true,
		KubeAPIQPS:                  200,
		KubeAPIBurst:                400,
		LeaderElectionLeaseDuration: 15 * time.Second,
		LeaderElectionRenewDeadline: 10 * time.Second,
		LeaderElectionRetryPeriod:   2 * time.Second,
	}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ExternalURL, "external-url", o.ExternalURL, "The hub's URL as members and SPIFFE consumers reach it, e.g. https://hub.example.com (required). Member issuers are <external-url>/clusters/<name>; agent tokens carry it as audience.")
	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Address of the HTTPS server (documents, agent API, /healthz, /readyz, /metrics).")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "Serving certificate (PEM). Without it the hub makes a self-signed one for development and writes its CA to --dev-ca-file.")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "Serving key (PEM) for --tls-cert-file.")
	fs.StringVar(&o.DevCAFile, "dev-ca-file", o.DevCAFile, "Where to write the CA of the self-signed development certificate, for agents' --hub-ca-file and curl --cacert; its key goes to the same path plus .key, and a restarted hub reuses both. Default: anchorage-hub-ca.pem in the temporary folder.")
	fs.StringVar(&o.BundleEndpointCAFile, "bundle-endpoint-ca-file", o.BundleEndpointCAFile, "Extra CA certificates (PEM), beside the system roots, to trust for https_web bundle endpoints of TrustDomains on a private PKI.")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "Namespace of the join token Secrets and the leader-election Lease.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig of the hub cluster. Default: in-cluster config, then $KUBECONFIG.")
	fs.DurationVar(&o.JoinTokenTTL, "join-token-ttl", o.JoinTokenTTL, "How long a member's single-use join token is valid.")
	fs.DurationVar(&o.ReportLease, "report-lease", o.ReportLease, "A member that has not reported for this long is Ready=False (its documents stay served).")
	fs.Int64Var(&o.MaxBodyBytes, "max-body-bytes", o.MaxBodyBytes, "Largest agent API request body accepted.")
	fs.DurationVar(&o.LongPollTimeout, "long-poll-timeout", o.LongPollTimeout, "How long an agent's bundles call waits for a change before the hub answers 204 and the agent calls again; at most 75s (agents wait 90s).")
	fs.IntVar(&o.MaxConcurrentWrites, "max-concurrent-writes", o.MaxConcurrentWrites, "Agent API status writes (joins, reports, acks) in flight to the hub's apiserver at once; more wait their turn.")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "Serve Go's profiles at /debug/pprof/ (unauthenticated: for debugging only).")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader among hub replicas for writes; every replica serves reads.")
	fs.Float32Var(&o.KubeAPIQPS, "kube-api-qps", o.KubeAPIQPS, "Client-side rate limit for the hub cluster's apiserver.")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", o.KubeAPIBurst, "Client-side burst for the hub cluster's apiserver.")
	fs.DurationVar(&o.LeaderElectionLeaseDuration, "leader-elect-lease-duration", o.LeaderElectionLeaseDuration, "How long followers wait before taking over an expired lease.")
	fs.DurationVar(&o.LeaderElectionRenewDeadline, "leader-elect-renew-deadline", o.LeaderElectionRenewDeadline, "How long the leader retries renewing before giving up.")
	fs.DurationVar(&o.LeaderElectionRetryPeriod, "leader-elect-retry-period", o.LeaderElectionRetryPeriod, "How often candidates try to acquire or renew the lease.")
}

// Validate checks the options and says what to fix.
func (o *Options) Validate() error {
	var errs []error
	if u, err := url.Parse(o.ExternalURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		errs = append(errs, fmt.Errorf("--external-url %q must be an https URL without query, fragment or user info", o.ExternalURL))
	} else if u.Path != "" && u.Path != "/" {
		// The routes are fixed at /clusters/... and /apis/v1/...: a hub
		// behind a proxy that strips a prefix is still reached, but its
		// issuer URLs and token audience would name paths it does not serve.
		errs = append(errs, fmt.Errorf("--external-url %q has a path: serve the hub at the root of its host (a proxy may strip a prefix, but then give the URL the hub is reached at without it, e.g. %s://%s)", o.ExternalURL, u.Scheme, u.Host))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if o.JoinTokenTTL <= 0 || o.ReportLease <= 0 || o.MaxBodyBytes <= 0 || o.LongPollTimeout <= 0 || o.MaxConcurrentWrites <= 0 {
		errs = append(errs, errors.New("--join-token-ttl, --report-lease, --max-body-bytes, --long-poll-timeout and --max-concurrent-writes must be positive"))
	}
	if o.LongPollTimeout > MaxLongPollTimeout {
		errs = append(errs, fmt.Errorf("--long-poll-timeout %s is above %s: agents give up on a poll after 90s, so a longer one fails every quiet poll and fires the hub-unreachable alert", o.LongPollTimeout, MaxLongPollTimeout))
	}
	return errors.Join(errs...)
}
