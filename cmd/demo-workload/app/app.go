package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// Main runs the mode opts name until ctx ends (or, for a client with
// --count, until its last round).
func Main(ctx context.Context, opts *Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if opts.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name and no host name to use instead: %w", err)
		}
		opts.Name = host
	}
	switch opts.Mode {
	case ModeServer:
		s, err := StartServer(ctx, opts)
		if err != nil {
			return err
		}
		defer s.Close()
		stopHealth, err := serveHealth(ctx, opts, s.Healthy)
		if err != nil {
			return err
		}
		defer stopHealth()
		<-ctx.Done()
		return nil
	default:
		c, err := NewClient(ctx, opts)
		if err != nil {
			return err
		}
		defer c.Close()
		stopHealth, err := serveHealth(ctx, opts, c.Healthy)
		if err != nil {
			return err
		}
		defer stopHealth()
		return c.Run(ctx)
	}
}

// openSource loads the projected files named, relative to
// --credentials-dir, and watches them. credential may be "".
func openSource(ctx context.Context, opts *Options, log logr.Logger, credential string, tds []spiffeid.TrustDomain, localDNS, clustersetDNS []string) (*workload.Source, error) {
	dir := opts.CredentialsDir
	wo := workload.Options{Logger: log, TrustBundleFiles: map[spiffeid.TrustDomain]string{}}
	var files []string
	if credential != "" {
		wo.CredentialBundleFile = filepath.Join(dir, credential)
		files = append(files, credential)
	}
	for _, td := range tds {
		wo.TrustBundleFiles[td] = filepath.Join(dir, workload.TrustBundleFileName(td))
		files = append(files, workload.TrustBundleFileName(td))
	}
	for _, f := range localDNS {
		wo.LocalDNSTrustBundleFiles = append(wo.LocalDNSTrustBundleFiles, filepath.Join(dir, f))
		files = append(files, f)
	}
	for _, f := range clustersetDNS {
		wo.ClustersetDNSTrustBundleFiles = append(wo.ClustersetDNSTrustBundleFiles, filepath.Join(dir, f))
		files = append(files, f)
	}
	src, err := workload.New(ctx, wo)
	if err != nil {
		return nil, fmt.Errorf("%w; the pod must project %s into %s (podCertificate and clusterTrustBundle sources, as in deploy/demo)", err, strings.Join(files, ", "), dir)
	}
	return src, nil
}

// healthy says whether every source with a credential holds a certificate
// valid now: an expired one means the kubelet stopped refreshing it.
func healthy(now time.Time, srcs ...*workload.Source) error {
	for _, src := range srcs {
		if src == nil {
			continue
		}
		c := src.Certificate()
		if c == nil {
			continue
		}
		if now.Before(c.Leaf.NotBefore) || now.After(c.Leaf.NotAfter) {
			return fmt.Errorf("the certificate %s is not valid now (valid %s to %s): the kubelet has not refreshed it; see the PodCertificateRequests of this pod",
				c.Leaf.SerialNumber, c.Leaf.NotBefore.UTC().Format(time.RFC3339), c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// serveHealth serves /healthz on --health-address until the returned stop
// is called.
func serveHealth(ctx context.Context, opts *Options, check func() error) (stop func(), err error) {
	if disabled(opts.HealthAddress) {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", opts.HealthAddress)
	if err != nil {
		return nil, fmt.Errorf("listening on --health-address %s: %w", opts.HealthAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: opts.Timeout, ErrorLog: httpErrorLog(logr.FromContextOrDiscard(ctx))}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	return func() { _ = srv.Close(); <-done }, nil
}

// httpErrorLog sends net/http's own messages (a failed handshake, from
// its side) to log at V(1): the demo logs refusals itself, with reasons.
func httpErrorLog(log logr.Logger) *stdlog.Logger {
	return stdlog.New(logWriter{log.V(1)}, "", 0)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

// peerSPIFFEID is the SPIFFE ID of a verified peer's X509-SVID, "" when it
// presented none.
func peerSPIFFEID(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return ""
	}
	return id.String()
}

// claimedID is the SPIFFE ID in a certificate that failed verification,
// for the log: what the peer claimed to be, not who it is.
func claimedID(raw [][]byte) string {
	if len(raw) == 0 {
		return "(no certificate)"
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return "(unparsable certificate)"
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return "(no SPIFFE ID)"
	}
	return id.String()
}
