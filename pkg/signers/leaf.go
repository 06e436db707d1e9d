package signers

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Leaf lifetime rules of DESIGN.md, inside the apiserver's own bounds
// (lifetime ≥ 1h, notBefore within 5 minutes of apiserver time,
// beginRefreshAt at least 10 minutes inside both ends).
const (
	MaxLeafLifetime = 24 * time.Hour
	MinLeafLifetime = time.Hour
	LeafBackdate    = 2 * time.Minute
)

// ErrCAExpiring means the active CA ends too soon to issue a leaf of the
// minimum lifetime. It is transient from a request's point of view: a
// rotation fixes it, so requests wait rather than fail.
var ErrCAExpiring = errors.New("the active CA expires in less than the minimum leaf lifetime; rotate the CA")

// Validity is a leaf's validity window and refresh hint.
type Validity struct {
	NotBefore, NotAfter, BeginRefreshAt time.Time
}

// Lifetime is NotAfter - NotBefore.
func (v Validity) Lifetime() time.Duration { return v.NotAfter.Sub(v.NotBefore) }

// LeafValidity computes the validity of a leaf issued at now:
// lifetime min(24h, maxExpirationSeconds), notBefore backdated 2 minutes,
// notAfter clipped to the CA's notAfter, refresh at half the lifetime.
// Times are whole seconds, as in X.509 and metav1.Time, so the status
// fields equal the certificate's.
func LeafValidity(now time.Time, maxExpirationSeconds int32, caNotAfter time.Time) (Validity, error) {
	lifetime := MaxLeafLifetime
	if maxExpirationSeconds > 0 {
		lifetime = min(lifetime, time.Duration(maxExpirationSeconds)*time.Second)
	}
	if lifetime < MinLeafLifetime {
		return Validity{}, fmt.Errorf("maxExpirationSeconds %d is under the minimum leaf lifetime of 1h", maxExpirationSeconds)
	}
	nb := now.Truncate(time.Second).Add(-LeafBackdate)
	na := nb.Add(lifetime)
	if caEnd := caNotAfter.Truncate(time.Second); na.After(caEnd) {
		na = caEnd
	}
	if na.Sub(nb) < MinLeafLifetime {
		return Validity{}, ErrCAExpiring
	}
	return Validity{
		NotBefore:      nb,
		NotAfter:       na,
		BeginRefreshAt: nb.Add(na.Sub(nb) / 2).Truncate(time.Second),
	}, nil
}

// SPIFFELeaf is the X509-SVID template of the anchorage.dev/spiffe signer:
// exactly one URI SAN spiffe://<td>/ns/<namespace>/sa/<service account>,
// empty subject (so the SAN extension is critical), critical key usage
// digitalSignature, EKU serverAuth and clientAuth.
func SPIFFELeaf(td spiffeid.TrustDomain, namespace, serviceAccount string) (*x509.Certificate, error) {
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return nil, fmt.Errorf("building SPIFFE ID: %w", err)
	}
	return &x509.Certificate{
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, nil
}

// ServiceDNSLeaf is the template of the anchorage.dev/service-dns signer:
// DNS SANs only, EKU serverAuth.
func ServiceDNSLeaf(dnsNames []string) (*x509.Certificate, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("a service-dns certificate needs at least one DNS name")
	}
	for _, n := range dnsNames {
		if !ValidDNSName(n) {
			return nil, fmt.Errorf("invalid DNS name %q", n)
		}
	}
	return &x509.Certificate{
		DNSNames:              dnsNames,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}, nil
}

// ValidDNSName reports whether name is a lowercase DNS name within the
// limits (253 characters, labels of 1 to 63 letters, digits and hyphens).
func ValidDNSName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Issued is a signed leaf with the chain a workload presents.
type Issued struct {
	// LeafDER is the signed leaf. It is kept as DER: re-parsing what was
	// just built costs a tenth of the signing path, and the signer only
	// needs the PEM.
	LeafDER []byte
	// Intermediates follow the leaf in the chain; never the trust anchor.
	Intermediates []*x509.Certificate
	Validity
}

// Chain parses the leaf and returns it with the intermediates.
func (i *Issued) Chain() ([]*x509.Certificate, error) {
	leaf, err := x509.ParseCertificate(i.LeafDER)
	if err != nil {
		return nil, fmt.Errorf("parsing signed leaf: %w", err)
	}
	return append([]*x509.Certificate{leaf}, i.Intermediates...), nil
}

// ChainPEM is the chain as the PodCertificateRequest status wants it.
func (i *Issued) ChainPEM() []byte {
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.LeafDER}), EncodeCertificatesPEM(i.Intermediates)...)
}

// Sign issues tmpl for pub from the pool's active CA. The leaf carries the
// AIA caIssuers URL of its issuing CA under issuer (the cluster's OIDC
// issuer URL).
func Sign(env Env, pool *Pool, issuer string, tmpl *x509.Certificate, pub crypto.PublicKey, maxExpirationSeconds int32) (*Issued, error) {
	ca, err := pool.Active()
	if err != nil {
		return nil, err
	}
	v, err := LeafValidity(env.now(), maxExpirationSeconds, ca.Certificate.NotAfter)
	if err != nil {
		return nil, err
	}
	serial, err := env.serial()
	if err != nil {
		return nil, err
	}
	leaf := *tmpl
	leaf.SerialNumber = serial
	leaf.NotBefore, leaf.NotAfter = v.NotBefore, v.NotAfter
	leaf.IssuingCertificateURL = []string{CAIssuerURL(issuer, pool.Signer, ca.Certificate.SubjectKeyId)}
	der, err := x509.CreateCertificate(env.rand(), &leaf, ca.Certificate, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing leaf: %w", err)
	}
	above := append([]*x509.Certificate{ca.Certificate}, ca.Chain...)
	return &Issued{LeafDER: der, Intermediates: above[:len(above)-1], Validity: v}, nil // everything but the anchor
}
