package oidcbundle

import (
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Paths under a member's issuer, fixed by DESIGN.md ("HTTP surface").
const (
	DiscoveryPath     = "/.well-known/openid-configuration"
	JWKSPath          = "/openid/v1/jwks"
	SPIFFEBundlePath  = "/.well-known/spiffe-bundle"
	TrustBundlesPath  = "/.well-known/anchorage/trust-bundles"
	CACertificatePath = "/.well-known/anchorage/ca"
)

// Content types of the served documents.
const (
	// ContentTypeJSON: discovery, the SPIFFE bundles (the federation spec
	// says SHOULD be application/json, and go-spiffe's handler sends it),
	// the trust-bundle index and errors.
	ContentTypeJSON = "application/json"
	// ContentTypeJWKS: RFC 7517 §8.5.2, and what kube-apiserver serves at
	// /openid/v1/jwks, so relying parties see what they would see there.
	ContentTypeJWKS = "application/jwk-set+json"
	// ContentTypePEM: RFC 8555 §9.1 registers application/pem-certificate-
	// chain for "one or more certificates" in PEM, which is exactly the
	// body (CERTIFICATE blocks, no headers, no keys). application/x-pem-file
	// is unregistered and says nothing about what the PEM holds.
	ContentTypePEM = "application/pem-certificate-chain"
	// ContentTypeDER: RFC 2585 §4.1; RFC 5280 §4.2.2.1 expects it for an
	// AIA caIssuers document holding one certificate.
	ContentTypeDER = "application/pkix-cert"
)

// Cache lifetimes. Every document is public and carries a strong ETag, so a
// cache revalidates cheaply (304) once max-age has passed. They are short
// because the hub itself pushes changes within a second: a cache in front
// of the hub must not add minutes to a key or anchor rotation.
const (
	// DiscoveryMaxAge: the discovery document only changes when the JWKS
	// algorithms change.
	DiscoveryMaxAge = 5 * time.Minute
	// KeysMaxAge: JWKS, PEM trust bundles, the trust-bundle index, and the
	// upper bound for SPIFFE bundles. A new service-account key signs
	// tokens as soon as the member's apiserver restarts, and relying parties
	// must see it within about a minute.
	KeysMaxAge = time.Minute
	// CACertificateMaxAge: an AIA document is named after the CA's key and
	// only changes if a CA is re-issued with the same key.
	CACertificateMaxAge = time.Hour
	// DefaultRefreshHint is the spiffe_refresh_hint when none is given: the
	// default the SPIFFE bundle spec tells consumers to assume (§6.1).
	DefaultRefreshHint = 5 * time.Minute
)

// The SPIFFE bundle's max-age is min(KeysMaxAge, refresh hint): a consumer
// polling at the hint must never be served a copy older than the hint.
func spiffeMaxAge(hint time.Duration) time.Duration { return min(KeysMaxAge, hint) }

// DefaultAgentServiceAccount is the member agent's ServiceAccount
// (namespace/name) when a Member does not name one.
const DefaultAgentServiceAccount = "anchorage-system/member-agent"

// Member is everything the hub knows about one member cluster that the
// public documents and token verification need. It is plain data: the
// hub's controllers fill it from the MemberCluster object.
type Member struct {
	// Name is the cluster id (a DNS label), the {cluster} of the URLs.
	Name string
	// Issuer is the member's service-account issuer. It must be
	// <hub URL>/clusters/<Name>, the only issuer this hub can serve
	// documents for; empty means exactly that.
	Issuer string
	// TrustDomain is the member's SPIFFE trust domain.
	TrustDomain string
	// JWKS is the member's service-account JWKS as its apiserver serves it
	// (checked with ParseJWKS). Empty means not reported yet: the hub
	// serves {"keys":[]} and every token is rejected.
	JWKS []byte
	// Anchors are the trust anchors (CA certificates) per signer name.
	Anchors map[string][]*x509.Certificate
	// Intermediates are issuing CA certificates per signer that are not
	// anchors (an imported CA with a chain). They are served as AIA
	// documents only, never in bundles. Usually empty.
	Intermediates map[string][]*x509.Certificate
	// AgentServiceAccount is the "namespace/name" whose tokens may act for
	// this member; empty means DefaultAgentServiceAccount.
	AgentServiceAccount string
	// SPIFFESequence is the spiffe_sequence of the member's SPIFFE bundle;
	// the hub increments it whenever the SPIFFE anchors change.
	SPIFFESequence uint64
	// SPIFFERefreshHint is the spiffe_refresh_hint; zero means
	// DefaultRefreshHint.
	SPIFFERefreshHint time.Duration
}

// TrustDomainBundle is the bundle of a whole trust domain, served at
// <hub URL>/trust-domains/<td>/bundle: one anchor per member cluster of the
// trust domain, or the anchors fetched from an external TrustDomain.
type TrustDomainBundle struct {
	TrustDomain string
	Anchors     []*x509.Certificate
	Sequence    uint64
	// RefreshHint; zero means DefaultRefreshHint.
	RefreshHint time.Duration
}

// document is one pre-serialised response. Everything a request needs is
// computed here, once per change, so that serving never builds a body and
// never formats a header.
type document struct {
	body []byte
	etag string
	// header is what a 200 carries; notModified what a 304 carries (RFC
	// 9110 §15.4.5: the validators and cache headers, no content headers).
	// Both are shared by every response and must never be modified.
	header      http.Header
	notModified http.Header
}

func newDocument(body []byte, contentType string, maxAge time.Duration) *document {
	sum := sha256.Sum256(body)
	// A strong tag: the same bytes always give the same tag, on every
	// replica of the hub (RFC 9110 §8.8.3). 128 bits of the hash are plenty.
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	cache := "public, max-age=" + strconv.Itoa(int(maxAge/time.Second))
	d := &document{
		body: body,
		etag: etag,
		// Canonical keys: the maps are assigned into the response header
		// directly, bypassing http.Header.Set.
		notModified: http.Header{
			"Etag":                   {etag},
			"Cache-Control":          {cache},
			"X-Content-Type-Options": {"nosniff"},
		},
	}
	d.header = maps.Clone(d.notModified)
	d.header["Content-Type"] = []string{contentType}
	d.header["Content-Length"] = []string{strconv.Itoa(len(body))}
	return d
}

// memberDocs are a member's documents and its token verifier.
type memberDocs struct {
	name         string
	discovery    *document
	jwks         *document
	spiffe       *document // nil: no SPIFFE anchors reported
	trustBundles *document
	pem          map[string]*document            // by signer slug
	caCerts      map[string]map[string]*document // slug → SKID hex → DER
	verifier     *Verifier
}

// discoveryDoc is kube-apiserver's discovery document (same members, same
// order, pkg/serviceaccount/openidmetadata.go) plus anchorage's pointer to
// the trust bundles.
type discoveryDoc struct {
	Issuer          string   `json:"issuer"`
	JWKSURI         string   `json:"jwks_uri"`
	ResponseTypes   []string `json:"response_types_supported"`
	SubjectTypes    []string `json:"subject_types_supported"`
	SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
	TrustBundlesURI string   `json:"anchorage_trust_bundles_uri"`
}

// trustBundlesDoc is served at <issuer>/.well-known/anchorage/trust-bundles
// (the anchorage_trust_bundles_uri of discovery), so that the URI discovery
// advertises answers: it maps each signer name to its PEM bundle URL.
type trustBundlesDoc struct {
	TrustBundles map[string]string `json:"trust_bundles"`
}

// buildMember validates m and builds all its documents.
func buildMember(hubURL string, m Member, clock signers.Clock) (*memberDocs, error) {
	if !isDNSLabel(m.Name) {
		return nil, fmt.Errorf("member name %q is not a DNS label (lowercase letters, digits and '-', at most 63)", m.Name)
	}
	issuer := hubURL + "/clusters/" + m.Name
	if m.Issuer != "" && m.Issuer != issuer {
		return nil, fmt.Errorf("member %q: issuer %q is not served by this hub: set the cluster's --service-account-issuer to %q", m.Name, m.Issuer, issuer)
	}
	td, err := parseTrustDomain(m.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", m.Name, err)
	}
	jwksBody := m.JWKS
	if len(jwksBody) == 0 {
		jwksBody = []byte(`{"keys":[]}`)
	}
	keys, err := ParseJWKS(jwksBody)
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", m.Name, err)
	}
	canonical, err := marshalJWKS(keys)
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", m.Name, err)
	}
	sa := m.AgentServiceAccount
	if sa == "" {
		sa = DefaultAgentServiceAccount
	}
	verifier, err := NewVerifier(VerifierConfig{Audience: hubURL, Issuer: issuer, Keys: keys, AgentServiceAccount: sa, Clock: clock})
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", m.Name, err)
	}

	d := &memberDocs{
		name:     m.Name,
		jwks:     newDocument(canonical, ContentTypeJWKS, KeysMaxAge),
		pem:      map[string]*document{},
		caCerts:  map[string]map[string]*document{},
		verifier: verifier,
	}
	disco, err := json.Marshal(discoveryDoc{
		Issuer:          issuer,
		JWKSURI:         issuer + JWKSPath,
		ResponseTypes:   []string{"id_token"},
		SubjectTypes:    []string{"public"},
		SigningAlgs:     algorithms(keys),
		TrustBundlesURI: issuer + TrustBundlesPath,
	})
	if err != nil {
		return nil, fmt.Errorf("member %q: encoding discovery: %w", m.Name, err)
	}
	d.discovery = newDocument(disco, ContentTypeJSON, DiscoveryMaxAge)

	index := trustBundlesDoc{TrustBundles: map[string]string{}}
	slugs := map[string]string{}
	for _, signer := range slices.Sorted(maps.Keys(m.Anchors)) {
		slug := signers.Slug(signer)
		if !isDNSLabel(slug) {
			return nil, fmt.Errorf("member %q: signer %q has no usable URL slug (%q)", m.Name, signer, slug)
		}
		if other, dup := slugs[slug]; dup {
			return nil, fmt.Errorf("member %q: signers %q and %q share the URL slug %q", m.Name, other, signer, slug)
		}
		slugs[slug] = signer
		anchors, err := checkCAs(m.Anchors[signer])
		if err != nil {
			return nil, fmt.Errorf("member %q: %s anchors: %w", m.Name, signer, err)
		}
		if len(anchors) == 0 {
			continue
		}
		d.pem[slug] = newDocument(signers.EncodeCertificatesPEM(anchors), ContentTypePEM, KeysMaxAge)
		index.TrustBundles[signer] = issuer + TrustBundlesPath + "/" + slug + ".pem"

		intermediates, err := checkCAs(m.Intermediates[signer])
		if err != nil {
			return nil, fmt.Errorf("member %q: %s intermediates: %w", m.Name, signer, err)
		}
		d.caCerts[slug] = caDocuments(slices.Concat(anchors, intermediates))

		if signer == signers.SPIFFESignerName {
			hint := cmp.Or(m.SPIFFERefreshHint, DefaultRefreshHint)
			body, err := BuildSPIFFEBundle(td, anchors, m.SPIFFESequence, hint)
			if err != nil {
				return nil, fmt.Errorf("member %q: %w", m.Name, err)
			}
			d.spiffe = newDocument(body, ContentTypeJSON, spiffeMaxAge(roundUpSeconds(hint)))
		}
	}
	for signer := range m.Intermediates {
		if _, ok := m.Anchors[signer]; !ok {
			return nil, fmt.Errorf("member %q: %s has intermediates but no anchors", m.Name, signer)
		}
	}
	idx, err := json.Marshal(index)
	if err != nil {
		return nil, fmt.Errorf("member %q: encoding the trust-bundle index: %w", m.Name, err)
	}
	d.trustBundles = newDocument(idx, ContentTypeJSON, KeysMaxAge)
	return d, nil
}

// caDocuments names each CA certificate by its subject key id, exactly as
// signers.CAIssuerURL does. Two certificates with the same key id (a CA
// re-issued with the same key) are the same issuer for a verifier; the one
// valid longest wins so that the document stays useful longest.
// Certificates without a key id cannot be named and are left out.
func caDocuments(certs []*x509.Certificate) map[string]*document {
	best := map[string]*x509.Certificate{}
	for _, c := range certs {
		if len(c.SubjectKeyId) == 0 {
			continue
		}
		skid := hex.EncodeToString(c.SubjectKeyId)
		if cur, ok := best[skid]; !ok || c.NotAfter.After(cur.NotAfter) {
			best[skid] = c
		}
	}
	out := make(map[string]*document, len(best))
	for skid, c := range best {
		out[skid] = newDocument(c.Raw, ContentTypeDER, CACertificateMaxAge)
	}
	return out
}

// checkCAs rejects anything that is not a CA certificate and drops
// duplicates, keeping the order (the pool's order: active, next, retired).
func checkCAs(certs []*x509.Certificate) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(certs))
	seen := map[string]bool{}
	for i, c := range certs {
		if c == nil {
			return nil, fmt.Errorf("certificate %d is nil", i)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("certificate %d (%q) is not a CA certificate", i, c.Subject)
		}
		if !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// BuildSPIFFEBundle encodes a SPIFFE bundle (SPIFFE Trust Domain and Bundle
// §4, X509-SVID §6) for td with go-spiffe: a JWK Set with spiffe_sequence,
// spiffe_refresh_hint (rounded up to whole seconds; zero means
// DefaultRefreshHint) and one "use":"x509-svid" key without kid per anchor,
// each with exactly one certificate in x5c. It serves the member bundles
// and the whole-trust-domain bundles alike.
//
// At least one anchor is required: an empty key set tells consumers that
// every SVID of the trust domain is revoked, which the hub never means when
// it merely has nothing to say yet. An anchor whose SPIFFE ID names another
// trust domain is rejected (bundles of different trust domains must never
// be merged).
func BuildSPIFFEBundle(td spiffeid.TrustDomain, anchors []*x509.Certificate, sequence uint64, refreshHint time.Duration) ([]byte, error) {
	if td.IsZero() {
		return nil, errors.New("SPIFFE bundle: no trust domain")
	}
	if refreshHint < 0 {
		return nil, fmt.Errorf("SPIFFE bundle for %s: negative refresh hint %v", td, refreshHint)
	}
	refreshHint = cmp.Or(refreshHint, DefaultRefreshHint)
	anchors, err := checkCAs(anchors)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE bundle for %s: %w", td, err)
	}
	if len(anchors) == 0 {
		return nil, fmt.Errorf("SPIFFE bundle for %s: no anchors; an empty bundle would revoke every SVID of the trust domain", td)
	}
	for i, a := range anchors {
		for _, u := range a.URIs {
			if u.Scheme == "spiffe" && u.Host != td.Name() {
				return nil, fmt.Errorf("SPIFFE bundle for %s: anchor %d (%q) belongs to trust domain %q", td, i, a.Subject, u.Host)
			}
		}
	}
	b := spiffebundle.New(td)
	b.SetX509Authorities(anchors)
	b.SetSequenceNumber(sequence)
	b.SetRefreshHint(refreshHint)
	body, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("SPIFFE bundle for %s: %w", td, err)
	}
	if err := checkSPIFFEBundle(body, len(anchors)); err != nil {
		return nil, fmt.Errorf("SPIFFE bundle for %s: %w", td, err)
	}
	return body, nil
}

// checkSPIFFEBundle re-reads go-spiffe's output against the rules SPIRE and
// other strict parsers enforce, so that a change in go-spiffe or go-jose
// cannot silently publish a bundle they reject. It runs once per change.
func checkSPIFFEBundle(body []byte, anchors int) error {
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("re-reading the encoded bundle: %w", err)
	}
	if len(doc.Keys) != anchors {
		return fmt.Errorf("encoded %d keys for %d anchors", len(doc.Keys), anchors)
	}
	for i, k := range doc.Keys {
		var use string
		var x5c []string
		_ = json.Unmarshal(k["use"], &use)
		_ = json.Unmarshal(k["x5c"], &x5c)
		if _, ok := k["kid"]; ok {
			return fmt.Errorf("key %d has a kid, which X509-SVID §6 forbids", i)
		}
		if use != "x509-svid" || len(x5c) != 1 {
			return fmt.Errorf("key %d has use %q and %d certificates; want x509-svid and exactly one", i, use, len(x5c))
		}
	}
	return nil
}

func buildTrustDomain(b TrustDomainBundle) (string, *document, error) {
	td, err := parseTrustDomain(b.TrustDomain)
	if err != nil {
		return "", nil, err
	}
	body, err := BuildSPIFFEBundle(td, b.Anchors, b.Sequence, b.RefreshHint)
	if err != nil {
		return "", nil, err
	}
	hint := roundUpSeconds(cmp.Or(b.RefreshHint, DefaultRefreshHint))
	return td.Name(), newDocument(body, ContentTypeJSON, spiffeMaxAge(hint)), nil
}

// roundUpSeconds mirrors go-spiffe's encoding of the refresh hint, so that
// max-age is compared with the hint actually published.
func roundUpSeconds(d time.Duration) time.Duration {
	return (d + time.Second - 1) / time.Second * time.Second
}

// parseTrustDomain accepts the bare trust-domain name only: the name is
// also a URL path segment and an index key, so "spiffe://td" or "TD" would
// name a different document.
func parseTrustDomain(name string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", name, err)
	}
	if td.Name() != name {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: give the bare name %q", name, td.Name())
	}
	return td, nil
}
