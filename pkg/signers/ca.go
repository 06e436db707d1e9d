package signers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultCALifetime is the lifetime of a CA the agent generates. Rotation
// is not automatic: an operator starts it (`member-agent ca rotate`,
// docs/rotate-ca.md) well before the CA ends; the agent then carries it
// through next → active → retired.
const DefaultCALifetime = 365 * 24 * time.Hour

// caBackdate leaves room for clock skew between the agent and verifiers.
const caBackdate = time.Hour

// CAProfile describes the cluster CA of one signer.
type CAProfile struct {
	// Signer is the signer name the CA serves.
	Signer string
	// ClusterName goes into the subject, for humans reading certificates.
	ClusterName string
	// TrustDomain (SPIFFE signer) is the only URI host the CA may certify;
	// the CA itself carries the SPIFFE ID spiffe://<trust domain>.
	TrustDomain string
	// DNSDomains (service-dns signer) are the only DNS suffixes the CA may
	// certify.
	DNSDomains []string
	// Issuer is the member cluster's OIDC issuer URL, embedded as the AIA
	// caIssuers URL.
	Issuer string
	// Lifetime of the CA; zero means DefaultCALifetime.
	Lifetime time.Duration
}

// SPIFFECAProfile is the CA profile of the anchorage.dev/spiffe signer.
func SPIFFECAProfile(clusterName, trustDomain, issuer string) CAProfile {
	return CAProfile{Signer: SPIFFESignerName, ClusterName: clusterName, TrustDomain: trustDomain, Issuer: issuer}
}

// ServiceDNSCAProfile is the CA profile of the anchorage.dev/service-dns
// signer: it may certify Service names (svc), MCS names (clusterset.local)
// and fully qualified names under the cluster domain.
func ServiceDNSCAProfile(clusterName, clusterDomain, issuer string) CAProfile {
	return CAProfile{
		Signer:      ServiceDNSSignerName,
		ClusterName: clusterName,
		DNSDomains:  []string{"svc", ClustersetDomain, clusterDomain},
		Issuer:      issuer,
	}
}

// ClustersetDomain is the MCS (KEP-1645) clusterset zone.
const ClustersetDomain = "clusterset.local"

// CA is one certificate authority of a pool.
type CA struct {
	State CAState
	// Certificate signs leaves.
	Certificate *x509.Certificate
	// Chain holds the certificates above Certificate, ending with the trust
	// anchor; empty when Certificate is a self-signed root.
	Chain []*x509.Certificate
	Key   crypto.Signer
	// RetiredAt is when the CA stopped signing; it stays published until
	// every leaf it signed has expired.
	RetiredAt time.Time
	// AddedAt is when the CA joined the pool as next (zero for a pool's
	// first CA): promotion waits a minimum time after it.
	AddedAt time.Time
	// DistributedAt is when a next CA's anchor was first seen applied by
	// every member trusting this cluster (zero until then, and again if
	// that stops being so): promotion also waits a minimum time after it,
	// for the kubelets of the last member to apply it.
	DistributedAt time.Time
}

// Anchor is the trust anchor verifiers need for leaves of this CA.
func (c *CA) Anchor() *x509.Certificate {
	if n := len(c.Chain); n > 0 {
		return c.Chain[n-1]
	}
	return c.Certificate
}

// SKID is the hex subject key identifier of the signing certificate, the
// name of its AIA document.
func (c *CA) SKID() string { return hex.EncodeToString(c.Certificate.SubjectKeyId) }

// NewCA creates a self-signed CA for profile. key nil means a fresh ECDSA
// P-256 key.
func NewCA(env Env, profile CAProfile, key crypto.Signer) (*CA, error) {
	if profile.Issuer == "" {
		return nil, errors.New("the CA needs the cluster's OIDC issuer URL")
	}
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), env.rand()); err != nil {
			return nil, fmt.Errorf("generating CA key: %w", err)
		}
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	serial, err := env.serial()
	if err != nil {
		return nil, err
	}
	lifetime := profile.Lifetime
	if lifetime == 0 {
		lifetime = DefaultCALifetime
	}
	now := env.now().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"anchorage"},
			CommonName:   fmt.Sprintf("anchorage %s CA %s %s", Slug(profile.Signer), profile.ClusterName, now.UTC().Format("20060102T150405Z")),
		},
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          skid,
		IssuingCertificateURL: []string{CAIssuerURL(profile.Issuer, profile.Signer, skid)},
	}
	if err := constrain(tmpl, profile); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(env.rand(), tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing the %s CA: %w", profile.Signer, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the new CA certificate: %w", err)
	}
	return &CA{Certificate: cert, Key: key}, nil
}

// constrain adds the name constraints of the profile. Name constraints are
// critical (RFC 5280 4.2.1.10): a verifier that cannot apply them must
// reject the chain rather than ignore them.
func constrain(tmpl *x509.Certificate, p CAProfile) error {
	switch p.Signer {
	case SPIFFESignerName:
		td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
		if err != nil {
			return fmt.Errorf("trust domain %q: %w", p.TrustDomain, err)
		}
		tmpl.URIs = []*url.URL{td.ID().URL()}
		// crypto/x509 treats a URI domain constraint as "this host and its
		// subdomains"; excluding the subdomains leaves exactly the trust
		// domain, since a subdomain is another trust domain.
		tmpl.PermittedURIDomains = []string{td.Name()}
		tmpl.ExcludedURIDomains = []string{"." + td.Name()}
		tmpl.ExcludedDNSDomains = []string{allDNSNames}
	case ServiceDNSSignerName:
		if len(p.DNSDomains) == 0 {
			return errors.New("the service-dns CA needs at least one permitted DNS domain")
		}
		// No URI constraint: rustls-webpki (from 0.103.12, RUSTSEC-2026-0098)
		// rejects every chain holding one, which would break Rust clients
		// (a Linkerd proxy, say) of Service names. A URI a service-dns CA
		// signed is no SPIFFE ID anywhere: SPIFFE verifiers trust only the
		// SPIFFE bundles, which never hold this CA.
		tmpl.PermittedDNSDomains = p.DNSDomains
	default:
		return fmt.Errorf("unknown signer %q", p.Signer)
	}
	// Verifiers check each SAN type only against constraints of that type,
	// so each CA shuts out the types it never issues.
	tmpl.ExcludedIPRanges = allIPs()
	tmpl.PermittedDNSDomainsCritical = true
	return nil
}

// allDNSNames excludes every DNS name: an excluded zero-length dNSName (with
// 0.0.0.0/0 and ::/0 for IP addresses) is how the CA/Browser Forum Baseline
// Requirements shut out a name type, and Go's verifier and OpenSSL's
// (nc_dns: "empty matches everything") read it so.
const allDNSNames = ""

func allIPs() []*net.IPNet {
	return []*net.IPNet{
		{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	}
}

// subjectKeyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256
// of the subjectPublicKey bits. Computed before signing so that the CA can
// name its own AIA document.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshalling public key: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

// ImportCA builds an active CA from an operator's key and chain (PEM). The
// chain starts with the certificate matching the key and may continue up
// to the root, which becomes the published anchor. anchorage cannot add
// name constraints or the AIA URL to a certificate it did not make; leaves
// still carry the AIA URL.
func ImportCA(keyPEM, chainPEM []byte) (*CA, error) {
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	chain, err := ParseCertificatesPEM(chainPEM)
	if err != nil {
		return nil, err
	}
	ca := &CA{State: StateActive, Certificate: chain[0], Chain: chain[1:], Key: key}
	if err := ca.validate(); err != nil {
		return nil, err
	}
	return ca, nil
}

func (c *CA) validate() error {
	if c.Certificate == nil || c.Key == nil {
		return errors.New("a CA needs a certificate and a key")
	}
	for _, cert := range append([]*x509.Certificate{c.Certificate}, c.Chain...) {
		if !cert.IsCA || !cert.BasicConstraintsValid {
			return fmt.Errorf("certificate %q is not a CA certificate (basicConstraints cA=true is required)", cert.Subject)
		}
	}
	if len(c.Certificate.SubjectKeyId) == 0 {
		return fmt.Errorf("CA certificate %q has no subject key identifier; anchorage names AIA documents by it", c.Certificate.Subject)
	}
	pub, ok := c.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(c.Certificate.PublicKey) {
		return fmt.Errorf("the private key does not match CA certificate %q", c.Certificate.Subject)
	}
	switch c.State {
	case StateNext, StateActive, StateRetired:
	default:
		return fmt.Errorf("unknown CA state %q", c.State)
	}
	return nil
}

// CAIssuerURL is the AIA caIssuers URL of certificates issued by the CA
// with subject key id skid: the hub serves that CA's DER there.
func CAIssuerURL(issuer, signer string, skid []byte) string {
	return strings.TrimSuffix(issuer, "/") + caPathPrefix + Slug(signer) + "/" + hex.EncodeToString(skid) + ".der"
}

const caPathPrefix = "/.well-known/anchorage/ca/"

// IssuerFromCertificate returns the OIDC issuer URL of the cluster that
// issued cert, read back from its AIA caIssuers URL. It is provenance only:
// trust it after the chain has been verified against configured anchors.
func IssuerFromCertificate(cert *x509.Certificate) (string, error) {
	for _, u := range cert.IssuingCertificateURL {
		i := strings.LastIndex(u, caPathPrefix)
		if i <= 0 {
			continue
		}
		rest := u[i+len(caPathPrefix):]
		slug, file, ok := strings.Cut(rest, "/")
		if !ok || slug == "" || !strings.HasSuffix(file, ".der") || strings.Contains(file, "/") {
			continue
		}
		if _, err := hex.DecodeString(strings.TrimSuffix(file, ".der")); err != nil {
			continue
		}
		return u[:i], nil
	}
	return "", errors.New("certificate carries no anchorage AIA caIssuers URL")
}
