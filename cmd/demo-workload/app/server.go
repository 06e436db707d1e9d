package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// Server is the server mode: an HTTPS listener with SPIFFE mTLS and one
// with the service-dns certificate, each optional.
type Server struct {
	name string
	log  logr.Logger

	spiffe, dns   *workload.Source
	spiffeAddr    net.Addr
	dnsAddr       net.Addr
	servers       []*http.Server
	wg            sync.WaitGroup
	closeOnce     sync.Once
	closeSources  []func() error
	shutdownAfter time.Duration
}

// StartServer loads the server's projected files and starts its listeners.
// It serves until Close; opts must be valid.
func StartServer(ctx context.Context, opts *Options) (_ *Server, err error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("server", opts.Name)
	s := &Server{name: opts.Name, log: log, shutdownAfter: opts.Timeout}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if !disabled(opts.ListenAddress) {
		policy, err := opts.serverPolicy()
		if err != nil {
			return nil, err
		}
		if s.spiffe, err = openSource(ctx, opts, log.WithName("spiffe"), SPIFFECredentialFile, policy.trustDomains(), nil, nil); err != nil {
			return nil, err
		}
		s.closeSources = append(s.closeSources, s.spiffe.Close)
		svid, err := s.spiffe.GetX509SVID()
		if err != nil {
			return nil, fmt.Errorf("%s in %s: %w; project an anchorage.dev/spiffe podCertificate there", SPIFFECredentialFile, opts.CredentialsDir, err)
		}
		cfg := s.spiffeConfig(policy)
		if s.spiffeAddr, err = s.serve(opts.ListenAddress, cfg, s.answerSPIFFE, opts.Timeout); err != nil {
			return nil, err
		}
		log.Info("Serving SPIFFE mTLS", "address", s.spiffeAddr.String(), "id", svid.ID.String(),
			"allowedIDs", joinStrings(policy.ids), "allowedTrustDomains", joinStrings(policy.tds))
	}
	if opts.DNSListenAddress != "" {
		if s.dns, err = openSource(ctx, opts, log.WithName("service-dns"), ServiceDNSCredentialFile, nil, nil, nil); err != nil {
			return nil, err
		}
		s.closeSources = append(s.closeSources, s.dns.Close)
		if s.dnsAddr, err = s.serve(opts.DNSListenAddress, s.dns.DNSServerConfig(), s.answerDNS, opts.Timeout); err != nil {
			return nil, err
		}
		log.Info("Serving TLS with the service-dns certificate", "address", s.dnsAddr.String(), "dnsNames", s.dns.Certificate().Leaf.DNSNames)
	}
	return s, nil
}

// spiffeConfig is the SPIFFE mTLS configuration, made per connection so
// that a refused client is logged with its address and the reason.
func (s *Server) spiffeConfig(policy *peerPolicy) *tls.Config {
	base := s.spiffe.ServerConfig(policy.authorize)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := base.Clone()
			verify := cfg.VerifyPeerCertificate
			remote := hello.Conn.RemoteAddr().String()
			cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
				err := verify(raw, chains)
				if err != nil {
					s.log.Error(err, "Refused a client over SPIFFE mTLS", "remote", remote, "claimedID", claimedID(raw))
				}
				return err
			}
			return cfg, nil
		},
	}
}

// serve listens on addr and serves answer over TLS with cfg.
func (s *Server) serve(addr string, cfg *tls.Config, answer http.HandlerFunc, timeout time.Duration) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           answer,
		ReadHeaderTimeout: timeout,
		IdleTimeout:       time.Minute,
		ErrorLog:          httpErrorLog(s.log),
	}
	s.servers = append(s.servers, srv)
	s.wg.Go(func() {
		if err := srv.Serve(tls.NewListener(ln, cfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error(err, "Listener stopped", "address", ln.Addr().String())
		}
	})
	return ln.Addr(), nil
}

// answerSPIFFE answers a client that passed SPIFFE mTLS: the handshake
// verified and authorized its X509-SVID already.
func (s *Server) answerSPIFFE(w http.ResponseWriter, r *http.Request) {
	peer := peerSPIFFEID(r.TLS)
	self := "(no X509-SVID)"
	if svid, err := s.spiffe.GetX509SVID(); err == nil {
		self = svid.ID.String()
	}
	s.log.Info("Exchange over SPIFFE mTLS", "client", peer, "remote", r.RemoteAddr)
	_, _ = fmt.Fprintf(w, "%s (%s) to %s: hello over SPIFFE mTLS\n", s.name, self, peer)
}

// answerDNS answers on the service-dns listener, which asks for no client
// certificate: the client verified the server by DNS name only.
func (s *Server) answerDNS(w http.ResponseWriter, r *http.Request) {
	s.log.Info("Exchange over TLS with the service-dns certificate", "serverName", r.TLS.ServerName, "remote", r.RemoteAddr)
	var names []string
	if c := s.dns.Certificate(); c != nil {
		names = c.Leaf.DNSNames
	}
	_, _ = fmt.Fprintf(w, "%s (%s) to an anonymous client: hello over TLS as %s\n", s.name, strings.Join(names, ", "), r.TLS.ServerName)
}

// SPIFFEAddr is the SPIFFE mTLS listener's address, nil when off.
func (s *Server) SPIFFEAddr() net.Addr { return s.spiffeAddr }

// DNSAddr is the service-dns listener's address, nil when off.
func (s *Server) DNSAddr() net.Addr { return s.dnsAddr }

// Healthy reports an error while a certificate is missing or not valid now.
func (s *Server) Healthy() error { return healthy(time.Now(), s.spiffe, s.dns) }

// Close stops the listeners, lets exchanges in flight finish (up to
// --timeout) and stops watching the files.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.shutdownAfter)
		defer cancel()
		for _, srv := range s.servers {
			_ = srv.Shutdown(ctx)
		}
		s.wg.Wait()
		for _, c := range s.closeSources {
			_ = c()
		}
	})
}
