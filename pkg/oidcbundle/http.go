package oidcbundle

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/anchorage-dev/anchorage/pkg/federation"
)

// Routes mounts the public documents on r:
//
//	/clusters/{cluster}/.well-known/openid-configuration
//	/clusters/{cluster}/openid/v1/jwks
//	/clusters/{cluster}/.well-known/spiffe-bundle
//	/clusters/{cluster}/.well-known/anchorage/trust-bundles
//	/clusters/{cluster}/.well-known/anchorage/trust-bundles/{slug}.pem
//	/clusters/{cluster}/.well-known/anchorage/ca/{slug}/{skid}.der
//	/trust-domains/{td}/bundle
//
// Everything else under /clusters/ and /trust-domains/ is a JSON 404, so
// that the whole public surface answers in one format; the rest of r is
// left to the hub.
//
// Each route matches every method and answers 405 itself: chi's own 405
// would be plain text and would depend on the hub's router settings.
// The file names are whole-segment parameters checked by the handlers
// rather than chi patterns such as {slug}.pem, whose parameter would stop at
// the first dot and make "a.b.pem" or "x.pem.pem" fall through silently.
func (s *Store) Routes(r chi.Router) {
	const member = "/clusters/{cluster}"
	r.Handle(member+DiscoveryPath, &memberHandler{store: s, kind: kindDiscovery})
	r.Handle(member+JWKSPath, &memberHandler{store: s, kind: kindJWKS})
	r.Handle(member+SPIFFEBundlePath, &memberHandler{store: s, kind: kindSPIFFE})
	r.Handle(member+TrustBundlesPath, &memberHandler{store: s, kind: kindTrustBundles})
	r.Handle(member+TrustBundlesPath+"/{file}", &memberHandler{store: s, kind: kindPEM})
	r.Handle(member+CACertificatePath+"/{slug}/{file}", &memberHandler{store: s, kind: kindCACert})
	r.Handle("/clusters/*", notFound{})
	r.Handle("/trust-domains/{td}/bundle", &trustDomainHandler{store: s})
	r.Handle("/trust-domains/*", notFound{})
}

type docKind int

const (
	kindDiscovery docKind = iota
	kindJWKS
	kindSPIFFE
	kindTrustBundles
	kindPEM
	kindCACert
)

// memberHandler serves one kind of document of the member named by the
// {cluster} parameter.
type memberHandler struct {
	store *Store
	kind  docKind
}

func (h *memberHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !methodAllowed(w, r) {
		return
	}
	// chi matches on the escaped path when there is one, so a parameter
	// holding %2F or %2E arrives escaped and fails the name checks below:
	// no decoding, hence no way to reach another member's document.
	name := chi.URLParam(r, "cluster")
	if !isDNSLabel(name) {
		federation.WriteError(w, http.StatusBadRequest, fmt.Sprintf("malformed cluster name %q: cluster names are DNS labels", name))
		return
	}
	m := h.store.snap.Load().members[name]
	if m == nil {
		federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not a member of this hub", name))
		return
	}
	var doc *document
	switch h.kind {
	case kindDiscovery:
		doc = m.discovery
	case kindJWKS:
		doc = m.jwks
	case kindTrustBundles:
		doc = m.trustBundles
	case kindSPIFFE:
		if doc = m.spiffe; doc == nil {
			federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("cluster %q has not reported anchorage.dev/spiffe anchors", name))
			return
		}
	case kindPEM:
		slug, ok := strings.CutSuffix(chi.URLParam(r, "file"), ".pem")
		if !ok {
			federation.WriteError(w, http.StatusNotFound, "no such document: trust bundles are named <signer-slug>.pem")
			return
		}
		if !isDNSLabel(slug) {
			federation.WriteError(w, http.StatusBadRequest, fmt.Sprintf("malformed signer slug %q", slug))
			return
		}
		if doc = m.pem[slug]; doc == nil {
			federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("cluster %q has no anchors for signer %q", name, slug))
			return
		}
	case kindCACert:
		slug := chi.URLParam(r, "slug")
		skid, ok := strings.CutSuffix(chi.URLParam(r, "file"), ".der")
		if !ok {
			federation.WriteError(w, http.StatusNotFound, "no such document: CA certificates are named <subject-key-id-hex>.der")
			return
		}
		if !isDNSLabel(slug) {
			federation.WriteError(w, http.StatusBadRequest, fmt.Sprintf("malformed signer slug %q", slug))
			return
		}
		if !isSKIDHex(skid) {
			federation.WriteError(w, http.StatusBadRequest, fmt.Sprintf("malformed subject key id %q: lowercase hex, whole bytes", skid))
			return
		}
		if doc = m.caCerts[slug][skid]; doc == nil {
			federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("cluster %q has no %s CA with subject key id %s", name, slug, skid))
			return
		}
	}
	serveDocument(w, r, doc)
}

// trustDomainHandler serves the SPIFFE bundle endpoint of a trust domain.
type trustDomainHandler struct {
	store *Store
}

func (h *trustDomainHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !methodAllowed(w, r) {
		return
	}
	td := chi.URLParam(r, "td")
	if !isTrustDomainName(td) {
		federation.WriteError(w, http.StatusBadRequest, fmt.Sprintf("malformed trust domain %q", td))
		return
	}
	doc := h.store.snap.Load().trustDomains[td]
	if doc == nil {
		federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("trust domain %q is not served by this hub", td))
		return
	}
	serveDocument(w, r, doc)
}

type notFound struct{}

func (notFound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !methodAllowed(w, r) {
		return
	}
	federation.WriteError(w, http.StatusNotFound, "no such document")
}

// serveDocument answers with d's pre-built headers and bytes, or 304 when
// the client already has them. The header values are shared, read-only
// slices assigned straight into the response: nothing is built per request.
func serveDocument(w http.ResponseWriter, r *http.Request, d *document) {
	h := w.Header()
	if inm := r.Header["If-None-Match"]; len(inm) > 0 && etagListMatches(inm, d.etag) {
		for k, v := range d.notModified {
			h[k] = v
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	for k, v := range d.header {
		h[k] = v
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(d.body)
	}
}

// etagListMatches evaluates If-None-Match (RFC 9110 §13.1.2) for GET and
// HEAD: "*" or any listed tag equal to etag under weak comparison (W/ is
// ignored). Like net/http, a malformed list matches nothing, so the client
// gets the full document rather than a wrong 304.
func etagListMatches(values []string, etag string) bool {
	for _, v := range values {
		for {
			v = strings.TrimLeft(v, " \t,")
			if v == "" {
				break
			}
			if v[0] == '*' {
				return true
			}
			v = strings.TrimPrefix(v, "W/")
			if len(v) < 2 || v[0] != '"' {
				return false
			}
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				return false
			}
			if v[:end+2] == etag {
				return true
			}
			v = v[end+2:]
		}
	}
	return false
}

// methodAllowed answers 405 for anything but GET and HEAD: the documents
// are read-only.
func methodAllowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	federation.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed: these documents are read-only (GET, HEAD)", r.Method))
	return false
}

// isDNSLabel: RFC 1123 label, the form of cluster names and signer slugs.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isTrustDomainName: the SPIFFE trust-domain alphabet (SPIFFE-ID §2.1).
func isTrustDomainName(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// isSKIDHex: the name signers.CAIssuerURL gives a CA, lowercase hex of a
// key id. anchorage's own CAs have 20-byte ids; imported CAs may have other
// lengths (8-byte RFC 7093 ids, say), so any whole number of bytes up to 64
// is well-formed and a wrong length is simply not found.
func isSKIDHex(s string) bool {
	if len(s) == 0 || len(s) > 128 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
