package workload

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ServerConfig is a SPIFFE mTLS server configuration: it presents the
// current X509-SVID and accepts clients whose X509-SVID verifies against the
// bundle of their own trust domain and passes authorizer
// (tlsconfig.AuthorizeID, AuthorizeMemberOf, AuthorizeOneOf, ...).
func (s *Source) ServerConfig(authorizer tlsconfig.Authorizer) *tls.Config {
	return tlsconfig.MTLSServerConfig(s, s, authorizer)
}

// ClientConfig is the SPIFFE mTLS client counterpart of ServerConfig.
func (s *Source) ClientConfig(authorizer tlsconfig.Authorizer) *tls.Config {
	return tlsconfig.MTLSClientConfig(s, s, authorizer)
}

// DNSClientConfig verifies the server's certificate by DNS name against the
// current service-dns trust anchors of the name's scope: the clusterset's
// for a name under svc.clusterset.local, this cluster's for any other. serverName is the name to verify and
// to send as SNI; empty means the host the connection was dialed with (as
// crypto/tls sets ServerName). When the Source has a credential, it is
// presented if the server asks for a client certificate.
//
// Verification runs in VerifyConnection (InsecureSkipVerify only turns off
// crypto/tls's own check against fixed roots) so that each handshake uses
// the roots loaded last.
func (s *Source) DNSClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection against the reloading roots
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := s.Certificate(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // no certificate to send
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			return s.verifyDNS(cs.PeerCertificates, name, x509.ExtKeyUsageServerAuth)
		},
	}
}

// DNSServerConfig presents the current certificate (a service-dns leaf)
// and does not ask for client certificates.
func (s *Source) DNSServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.Certificate(); c != nil {
				return c, nil
			}
			return nil, errors.New("workload: no credential configured")
		},
	}
}

func (s *Source) verifyDNS(peer []*x509.Certificate, name string, usage x509.ExtKeyUsage) error {
	if len(peer) == 0 {
		return errors.New("workload: the peer presented no certificate")
	}
	if name == "" {
		return errors.New("workload: no DNS name to verify the peer against; pass the server name")
	}
	roots := s.DNSRoots(name)
	if roots == nil {
		return fmt.Errorf("workload: no %s DNS trust bundle configured to verify %q against", scopeOf(name), name)
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	_, err := peer[0].Verify(x509.VerifyOptions{
		DNSName:       name,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("workload: verifying the peer certificate for %q: %w", name, err)
	}
	return nil
}
