package app

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// Modes of the binary.
const (
	ModeServer = "server"
	ModeClient = "client"
)

// Files read from --credentials-dir. Peer trust bundles are
// <trust domain>.spiffe-trust-bundle.pem (workload.TrustBundleFileName),
// as the SPIFFE filesystem-delivery draft names them.
const (
	// SPIFFECredentialFile is the pod's X509-SVID: a podCertificate
	// projection of anchorage.dev/spiffe with this credentialBundlePath.
	SPIFFECredentialFile = workload.CredentialBundleFileName
	// ServiceDNSCredentialFile is the server's service-dns certificate: a
	// podCertificate projection of anchorage.dev/service-dns.
	ServiceDNSCredentialFile = "service-dns-credential-bundle.pem"
	// ClustersetTrustBundleFile holds the clusterset's service-dns anchors:
	// a clusterTrustBundle projection of anchorage.dev/service-dns
	// selecting service-dns.anchorage.dev/scope=clusterset.
	ClustersetTrustBundleFile = "clusterset.service-dns-trust-bundle.pem"
	// LocalTrustBundleFile is the name deploy/demo would give this
	// cluster's service-dns anchors: a clusterTrustBundle projection of
	// anchorage.dev/service-dns selecting service-dns.anchorage.dev/scope=cluster.
	LocalTrustBundleFile = "local.service-dns-trust-bundle.pem"
)

// Options are demo-workload's flags.
type Options struct {
	Mode           string
	CredentialsDir string
	Name           string
	HealthAddress  string
	Timeout        time.Duration

	// Server mode.
	ListenAddress     string
	DNSListenAddress  string
	AllowSPIFFEIDs    []string
	AllowTrustDomains []string

	// Client mode.
	ServerAddress      string
	ExpectSPIFFEIDs    []string
	ExpectTrustDomains []string
	DNSServerAddress   string
	DNSServerName      string
	// ClustersetDNSTrustBundles are the clusterset's service-dns anchor files
	// (--clusterset-dns-trust-bundle); LocalDNSTrustBundles this cluster's
	// (--local-dns-trust-bundle). Which one verifies depends on
	// --dns-server-name (workload.IsClustersetName).
	ClustersetDNSTrustBundles []string
	LocalDNSTrustBundles      []string
	Interval                  time.Duration
	Count                     int
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		CredentialsDir:            "/var/run/anchorage",
		HealthAddress:             ":8081",
		Timeout:                   5 * time.Second,
		ListenAddress:             ":8443",
		ClustersetDNSTrustBundles: []string{ClustersetTrustBundleFile},
		Interval:                  5 * time.Second,
	}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Mode, "mode", o.Mode, "\"server\" or \"client\" (required).")
	fs.StringVar(&o.CredentialsDir, "credentials-dir", o.CredentialsDir, "Folder of the projected volume: "+SPIFFECredentialFile+" (the pod's X509-SVID), <trust domain>.spiffe-trust-bundle.pem for each peer trust domain, "+ServiceDNSCredentialFile+" (server, --dns-listen-address) and the --clusterset-dns-trust-bundle or --local-dns-trust-bundle files (client). Reloaded when the kubelet rotates them.")
	fs.StringVar(&o.Name, "name", o.Name, "Name in answers and logs. Default: the host name (the pod's name).")
	fs.StringVar(&o.HealthAddress, "health-address", o.HealthAddress, "Address of the plain-HTTP /healthz endpoint (200 while the certificates are loaded and valid); \"0\" disables it.")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "Bound on each handshake and exchange.")

	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Server: address of the SPIFFE mTLS listener; \"0\" disables it.")
	fs.StringVar(&o.DNSListenAddress, "dns-listen-address", o.DNSListenAddress, "Server: address of the TLS listener that presents the service-dns certificate ("+ServiceDNSCredentialFile+") and asks for no client certificate. Empty: off.")
	fs.StringSliceVar(&o.AllowSPIFFEIDs, "allow-spiffe-id", o.AllowSPIFFEIDs, "Server: SPIFFE IDs of the clients admitted over mTLS, e.g. spiffe://east.example/ns/demo/sa/client (repeatable or comma-separated). The SPIFFE listener needs this or --allow-trust-domain.")
	fs.StringSliceVar(&o.AllowTrustDomains, "allow-trust-domain", o.AllowTrustDomains, "Server: admit every workload of these trust domains over mTLS (repeatable or comma-separated).")

	fs.StringVar(&o.ServerAddress, "server-address", o.ServerAddress, "Client: host:port of the server's SPIFFE mTLS listener, e.g. echo.demo.svc.clusterset.local:8443.")
	fs.StringSliceVar(&o.ExpectSPIFFEIDs, "expect-spiffe-id", o.ExpectSPIFFEIDs, "Client: SPIFFE IDs the server may present, e.g. spiffe://west.example/ns/demo/sa/server (repeatable or comma-separated). --server-address needs this or --expect-trust-domain.")
	fs.StringSliceVar(&o.ExpectTrustDomains, "expect-trust-domain", o.ExpectTrustDomains, "Client: accept any server of these trust domains (repeatable or comma-separated).")
	fs.StringVar(&o.DNSServerAddress, "dns-server-address", o.DNSServerAddress, "Client: host:port of the server's service-dns TLS listener, e.g. echo.demo.svc.clusterset.local:9443.")
	fs.StringVar(&o.DNSServerName, "dns-server-name", o.DNSServerName, "Client: the DNS name the server's certificate must hold (and the SNI sent). Default: the host of --dns-server-address.")
	fs.StringSliceVar(&o.ClustersetDNSTrustBundles, "clusterset-dns-trust-bundle", o.ClustersetDNSTrustBundles, "Client: files in --credentials-dir with every clusterset member's service-dns anchors (projected from the bundle labelled service-dns.anchorage.dev/scope=clusterset). They verify a --dns-server-name under svc.clusterset.local, and only such a name.")
	fs.StringSliceVar(&o.LocalDNSTrustBundles, "local-dns-trust-bundle", o.LocalDNSTrustBundles, "Client: files in --credentials-dir with this cluster's own service-dns anchors (projected from the bundle labelled service-dns.anchorage.dev/scope=cluster, e.g. "+LocalTrustBundleFile+"). They verify any other --dns-server-name (<svc>.<ns>.svc, the cluster domain): another member's CA never vouches for this cluster's names.")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "Client: time between rounds of exchanges.")
	fs.IntVar(&o.Count, "count", o.Count, "Client: stop after this many rounds, failing if any exchange failed; 0 runs until stopped.")
}

// Validate checks the options and says what to fix.
func (o *Options) Validate() error {
	var errs []error
	if o.CredentialsDir == "" {
		errs = append(errs, errors.New("--credentials-dir must name the folder of the projected volume"))
	}
	if o.Timeout <= 0 {
		errs = append(errs, errors.New("--timeout must be positive"))
	}
	if !disabled(o.HealthAddress) {
		errs = append(errs, checkAddress("--health-address", o.HealthAddress, true))
	}
	switch o.Mode {
	case ModeServer:
		errs = append(errs, o.validateServer()...)
	case ModeClient:
		errs = append(errs, o.validateClient()...)
	default:
		errs = append(errs, fmt.Errorf("--mode %q: set --mode=server or --mode=client", o.Mode))
	}
	return errors.Join(errs...)
}

func (o *Options) validateServer() []error {
	var errs []error
	errs = append(errs, otherModeFlags(ModeServer, []setFlag{
		{"--server-address", o.ServerAddress != ""}, {"--expect-spiffe-id", len(o.ExpectSPIFFEIDs) > 0}, {"--expect-trust-domain", len(o.ExpectTrustDomains) > 0},
		{"--dns-server-address", o.DNSServerAddress != ""}, {"--dns-server-name", o.DNSServerName != ""}, {"--count", o.Count != 0},
	})...)
	spiffe, dns := !disabled(o.ListenAddress), o.DNSListenAddress != ""
	if !spiffe && !dns {
		errs = append(errs, errors.New("the server has no listener: set --listen-address or --dns-listen-address"))
	}
	if spiffe {
		errs = append(errs, checkAddress("--listen-address", o.ListenAddress, true))
		if _, err := o.serverPolicy(); err != nil {
			errs = append(errs, err)
		}
	}
	if dns {
		errs = append(errs, checkAddress("--dns-listen-address", o.DNSListenAddress, true))
	}
	return errs
}

func (o *Options) validateClient() []error {
	var errs []error
	errs = append(errs, otherModeFlags(ModeClient, []setFlag{
		{"--allow-spiffe-id", len(o.AllowSPIFFEIDs) > 0}, {"--allow-trust-domain", len(o.AllowTrustDomains) > 0}, {"--dns-listen-address", o.DNSListenAddress != ""},
	})...)
	if o.ServerAddress == "" && o.DNSServerAddress == "" {
		errs = append(errs, errors.New("the client has nothing to call: set --server-address or --dns-server-address"))
	}
	if o.ServerAddress != "" {
		errs = append(errs, checkAddress("--server-address", o.ServerAddress, false))
		if _, err := o.clientPolicy(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.DNSServerAddress != "" {
		errs = append(errs, checkAddress("--dns-server-address", o.DNSServerAddress, false))
		if o.dnsServerName() == "" {
			errs = append(errs, errors.New("--dns-server-name is needed when --dns-server-address has no host name"))
		}
		errs = append(errs, o.validateDNSTrustBundles()...)
	}
	if o.Interval <= 0 {
		errs = append(errs, errors.New("--interval must be positive"))
	}
	if o.Count < 0 {
		errs = append(errs, errors.New("--count must not be negative"))
	}
	return errs
}

// validateDNSTrustBundles wants files of the scope of --dns-server-name.
func (o *Options) validateDNSTrustBundles() []error {
	var errs []error
	flag, files := o.dnsTrustBundleFlag()
	if name := o.dnsServerName(); name != "" && len(files) == 0 {
		errs = append(errs, fmt.Errorf("%s must name at least one file with the service-dns anchors that verify %s", flag, name))
	}
	for _, f := range []struct {
		flag  string
		files []string
	}{{"--clusterset-dns-trust-bundle", o.ClustersetDNSTrustBundles}, {"--local-dns-trust-bundle", o.LocalDNSTrustBundles}} {
		for _, file := range f.files {
			if file == "" || filepath.IsAbs(file) || strings.Contains(file, "..") {
				errs = append(errs, fmt.Errorf("%s %q must be a file name inside --credentials-dir", f.flag, file))
			}
		}
	}
	return errs
}

// dnsTrustBundleFlag is the flag, and its files, whose anchors verify
// --dns-server-name.
func (o *Options) dnsTrustBundleFlag() (string, []string) {
	if workload.IsClustersetName(o.dnsServerName()) {
		return "--clusterset-dns-trust-bundle", o.ClustersetDNSTrustBundles
	}
	return "--local-dns-trust-bundle", o.LocalDNSTrustBundles
}

// setFlag says whether a flag of the other mode was given.
type setFlag struct {
	name string
	set  bool
}

// otherModeFlags refuses flags that mode ignores: a client flag on a
// server is a mistake in the manifest, not something to ignore.
func otherModeFlags(mode string, flags []setFlag) []error {
	other := map[string]string{ModeServer: ModeClient, ModeClient: ModeServer}[mode]
	var errs []error
	for _, f := range flags {
		if f.set {
			errs = append(errs, fmt.Errorf("%s is a %s flag; it has no effect with --mode=%s", f.name, other, mode))
		}
	}
	return errs
}

// disabled says whether an optional listener address turns it off.
func disabled(addr string) bool { return addr == "" || addr == "0" }

// checkAddress accepts host:port; a listener may leave the host empty.
func checkAddress(flag, addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case listen && (err != nil || port == ""):
		return fmt.Errorf("%s %q must be host:port or :port", flag, addr)
	case !listen && (err != nil || port == "" || host == ""):
		return fmt.Errorf("%s %q must be host:port", flag, addr)
	}
	return nil
}

// dnsServerName is the name the server's service-dns certificate must hold.
func (o *Options) dnsServerName() string {
	if o.DNSServerName != "" {
		return o.DNSServerName
	}
	host, _, err := net.SplitHostPort(o.DNSServerAddress)
	if err != nil || net.ParseIP(host) != nil {
		return ""
	}
	return host
}

// serverPolicy is who the server admits over mTLS.
func (o *Options) serverPolicy() (*peerPolicy, error) {
	return newPeerPolicy("--allow-spiffe-id", o.AllowSPIFFEIDs, "--allow-trust-domain", o.AllowTrustDomains)
}

// clientPolicy is which server identities the client accepts.
func (o *Options) clientPolicy() (*peerPolicy, error) {
	return newPeerPolicy("--expect-spiffe-id", o.ExpectSPIFFEIDs, "--expect-trust-domain", o.ExpectTrustDomains)
}
