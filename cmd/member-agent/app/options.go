package app

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Options are the member agent's flags.
type Options struct {
	ClusterName   string
	TrustDomain   string
	Issuer        string
	ClusterDomain string
	Namespace     string
	Kubeconfig    string

	KubeAPIQPS   float32
	KubeAPIBurst int
	Workers      int

	LeaderElect                 bool
	LeaderElectionLeaseDuration time.Duration
	LeaderElectionRenewDeadline time.Duration
	LeaderElectionRetryPeriod   time.Duration

	MetricsBindAddress     string
	HealthProbeBindAddress string

	ServiceDNSPendingTimeout time.Duration
	LeafKeyTypes             []string
	ClustersetMember         bool
	CAPromotionDelay         time.Duration
	CALifetime               time.Duration
	SPIFFECAImportSecret     string
	ServiceDNSCAImportSecret string

	HubURL          string
	HubCAFile       string
	HubTokenFile    string
	JoinTokenSecret string
	ReportInterval  time.Duration

	// PodName and PodNamespace (from the downward API) name the object
	// agent-level Events are recorded against.
	PodName, PodNamespace string
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	kts := make([]string, 0, len(signers.AllKeyTypes()))
	for _, kt := range signers.AllKeyTypes() {
		kts = append(kts, string(kt))
	}
	return &Options{
		ClusterDomain: "cluster.local",
		Namespace:     "anchorage-system",
		// Client-side throttling at client-go's default 5 QPS would issue 5
		// certificates a second; API Priority and Fairness protects the
		// apiserver, so the agent may use what it grants.
		KubeAPIQPS:                  1000,
		KubeAPIBurst:                2000,
		Workers:                     32,
		LeaderElect:                 true,
		LeaderElectionLeaseDuration: 15 * time.Second,
		LeaderElectionRenewDeadline: 10 * time.Second,
		LeaderElectionRetryPeriod:   2 * time.Second,
		MetricsBindAddress:          ":8080",
		HealthProbeBindAddress:      ":8081",
		ServiceDNSPendingTimeout:    10 * time.Minute,
		LeafKeyTypes:                kts,
		CALifetime:                  signers.DefaultCALifetime,
		HubTokenFile:                "/var/run/secrets/anchorage.dev/hub/token",
		JoinTokenSecret:             "anchorage-join-token",
		ReportInterval:              30 * time.Second,
		CAPromotionDelay:            5 * time.Minute,
	}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ClusterName, "cluster-name", o.ClusterName, "This cluster's id: a DNS label, unique in the federation and equal to its MemberCluster name on the hub (required).")
	fs.StringVar(&o.TrustDomain, "trust-domain", o.TrustDomain, "SPIFFE trust domain of this cluster's workloads, e.g. east.example.com (required).")
	fs.StringVar(&o.Issuer, "issuer", o.Issuer, "This cluster's service-account OIDC issuer URL, embedded in every certificate. Default: read from the apiserver's /.well-known/openid-configuration.")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "The cluster's DNS domain; service-dns certificates also carry <svc>.<ns>.svc.<cluster-domain>.")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "Namespace holding the agent's CA pool Secrets and leader-election Lease.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path to a kubeconfig. Default: in-cluster config, then $KUBECONFIG.")
	fs.Float32Var(&o.KubeAPIQPS, "kube-api-qps", o.KubeAPIQPS, "Client-side rate limit for apiserver requests (queries per second).")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", o.KubeAPIBurst, "Client-side burst for apiserver requests.")
	fs.IntVar(&o.Workers, "workers", o.Workers, "Concurrent PodCertificateRequests signed per signer. Each waits on its status write, so this is also the writes in flight; API Priority and Fairness protects the apiserver.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader so that only one replica signs. Disable only for a single replica.")
	fs.DurationVar(&o.LeaderElectionLeaseDuration, "leader-elect-lease-duration", o.LeaderElectionLeaseDuration, "How long followers wait before taking over a lease that was not renewed.")
	fs.DurationVar(&o.LeaderElectionRenewDeadline, "leader-elect-renew-deadline", o.LeaderElectionRenewDeadline, "How long the leader retries renewing before giving up leadership.")
	fs.DurationVar(&o.LeaderElectionRetryPeriod, "leader-elect-retry-period", o.LeaderElectionRetryPeriod, "How often candidates try to acquire or renew the lease.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "Address of the Prometheus /metrics endpoint; \"0\" disables it.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", o.HealthProbeBindAddress, "Address of the /healthz and /readyz endpoints; \"0\" disables them.")
	fs.DurationVar(&o.ServiceDNSPendingTimeout, "service-dns-pending-timeout", o.ServiceDNSPendingTimeout, "How long a service-dns request waits for a Service selecting its pod before it is Failed.")
	fs.StringSliceVar(&o.LeafKeyTypes, "leaf-key-types", o.LeafKeyTypes, "Leaf key types the signers issue for; requests with other key types are Denied (UnsupportedKeyType).")
	fs.BoolVar(&o.ClustersetMember, "clusterset-member", o.ClustersetMember, "Issue <svc>.<ns>.svc.clusterset.local names for exported Services without a hub (standalone installs). With --hub-url the hub decides (MemberCluster spec.clusterSet).")
	fs.DurationVar(&o.CALifetime, "ca-lifetime", o.CALifetime, "Lifetime of the CAs the agent generates.")
	fs.StringVar(&o.SPIFFECAImportSecret, "spiffe-ca-import-secret", o.SPIFFECAImportSecret, "kubernetes.io/tls Secret in --namespace to import as the first SPIFFE CA (tls.key; tls.crt = CA certificate then its chain). Default: generate a CA.")
	fs.StringVar(&o.ServiceDNSCAImportSecret, "service-dns-ca-import-secret", o.ServiceDNSCAImportSecret, "kubernetes.io/tls Secret in --namespace to import as the first service-dns CA. Default: generate a CA.")
	fs.StringVar(&o.HubURL, "hub-url", o.HubURL, "The hub's external URL. Empty: run standalone, without federation.")
	fs.StringVar(&o.HubCAFile, "hub-ca-file", o.HubCAFile, "CA certificates (PEM): the only roots trusted for the hub's serving certificate (a pin; the system roots are then not consulted), re-read on every new connection so a rotated file needs no restart. Omit it to trust the system roots.")
	fs.StringVar(&o.HubTokenFile, "hub-token-file", o.HubTokenFile, "Projected service-account token with the hub URL as audience (a serviceAccountToken volume), read on every call.")
	fs.StringVar(&o.JoinTokenSecret, "join-token-secret", o.JoinTokenSecret, "Secret in --namespace whose \"token\" key holds the hub's single-use join token for this cluster.")
	fs.DurationVar(&o.ReportInterval, "report-interval", o.ReportInterval, "How often the agent reports its anchors and JWKS to the hub (keep it well under the hub's --report-lease).")
	fs.DurationVar(&o.CAPromotionDelay, "ca-promotion-delay", o.CAPromotionDelay, "Least time a next CA is published, and applied by every member trusting this cluster (when a hub is configured), before it signs: for kubelets to refresh pods' projected trust bundles.")
	fs.StringVar(&o.PodName, "pod-name", o.PodName, "The agent's pod name (downward API), for Events.")
	fs.StringVar(&o.PodNamespace, "pod-namespace", o.PodNamespace, "The agent's pod namespace (downward API), for Events.")
}

// Validate checks the options and says what to fix.
func (o *Options) Validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Label(o.ClusterName); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-name %q must be a DNS label: %s", o.ClusterName, strings.Join(msgs, "; ")))
	}
	if td, err := spiffeid.TrustDomainFromString(o.TrustDomain); err != nil || o.TrustDomain == "" {
		errs = append(errs, fmt.Errorf("--trust-domain %q is not a SPIFFE trust domain name (lowercase letters, digits, '.', '-', '_'): %v", o.TrustDomain, err))
	} else if msgs := validation.IsValidLabelValue(td.Name()); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--trust-domain %q must also be a valid label value (it labels ClusterTrustBundles): %s", o.TrustDomain, strings.Join(msgs, "; ")))
	}
	if o.Issuer != "" {
		if u, err := url.Parse(o.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("--issuer %q must be an https URL without query or fragment", o.Issuer))
		}
	}
	if msgs := validation.IsDNS1123Subdomain(o.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-domain %q: %s", o.ClusterDomain, strings.Join(msgs, "; ")))
	}
	if _, err := signers.ParseKeyTypes(o.LeafKeyTypes); err != nil {
		errs = append(errs, fmt.Errorf("--leaf-key-types: %w", err))
	} else if len(o.LeafKeyTypes) == 0 {
		errs = append(errs, errors.New("--leaf-key-types must name at least one key type"))
	}
	if o.Workers < 1 {
		errs = append(errs, errors.New("--workers must be at least 1"))
	}
	if o.ServiceDNSPendingTimeout <= 0 {
		errs = append(errs, errors.New("--service-dns-pending-timeout must be positive"))
	}
	if o.HubURL != "" {
		if u, err := url.Parse(o.HubURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--hub-url %q must be an https URL", o.HubURL))
		}
		if o.ReportInterval <= 0 {
			errs = append(errs, errors.New("--report-interval must be positive"))
		}
		if o.ClustersetMember {
			errs = append(errs, errors.New("--clusterset-member is for installs without a hub; with --hub-url, set spec.clusterSet on the MemberCluster instead"))
		}
	}
	if o.CAPromotionDelay < 0 {
		errs = append(errs, errors.New("--ca-promotion-delay must not be negative"))
	}
	if o.CALifetime < 2*signers.MaxLeafLifetime {
		errs = append(errs, fmt.Errorf("--ca-lifetime must be at least %s", 2*signers.MaxLeafLifetime))
	}
	return errors.Join(errs...)
}
