package oidcbundle

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

const (
	wantDiscovery = `{"issuer":"https://hub.example/clusters/east",` +
		`"jwks_uri":"https://hub.example/clusters/east/openid/v1/jwks",` +
		`"response_types_supported":["id_token"],` +
		`"subject_types_supported":["public"],` +
		`"id_token_signing_alg_values_supported":["ES256","RS256"],` +
		`"anchorage_trust_bundles_uri":"https://hub.example/clusters/east/.well-known/anchorage/trust-bundles"}`
	// Pinned so that any change in the discovery bytes (member order,
	// escaping, a new field) is a deliberate one.
	wantDiscoveryETag = `"ef61d45a70061b84f5a3da32fc0e0b19"`

	wantTrustBundles = `{"trust_bundles":{` +
		`"anchorage.dev/service-dns":"https://hub.example/clusters/east/.well-known/anchorage/trust-bundles/service-dns.pem",` +
		`"anchorage.dev/spiffe":"https://hub.example/clusters/east/.well-known/anchorage/trust-bundles/spiffe.pem"}}`
)

// TestDocuments fetches every document of the fixed member through the
// router and checks status, body and every header.
func TestDocuments(t *testing.T) {
	s := newTestStore(t)
	r := newRouter(s)
	spiffeCA, nextCA, dnsCA := readCert(t, "east-spiffe"), readCert(t, "east-spiffe-next"), readCert(t, "east-service-dns")

	tests := []struct {
		name         string
		path         string
		contentType  string
		cacheControl string
		golden       string // file under testdata/golden
		want         string // exact body, when short enough to read here
		wantBytes    []byte // exact body computed from the fixtures
	}{
		{name: "discovery", path: "/clusters/east/.well-known/openid-configuration",
			contentType: "application/json", cacheControl: "public, max-age=300", want: wantDiscovery, golden: "east-discovery.json"},
		{name: "jwks", path: "/clusters/east/openid/v1/jwks",
			contentType: "application/jwk-set+json", cacheControl: "public, max-age=60", golden: "east-jwks.json"},
		{name: "spiffe bundle", path: "/clusters/east/.well-known/spiffe-bundle",
			contentType: "application/json", cacheControl: "public, max-age=60", golden: "east-spiffe-bundle.json"},
		{name: "trust-bundle index", path: "/clusters/east/.well-known/anchorage/trust-bundles",
			contentType: "application/json", cacheControl: "public, max-age=60", want: wantTrustBundles},
		{name: "spiffe pem", path: "/clusters/east/.well-known/anchorage/trust-bundles/spiffe.pem",
			contentType: "application/pem-certificate-chain", cacheControl: "public, max-age=60", golden: "east-spiffe.pem",
			wantBytes: signers.EncodeCertificatesPEM([]*x509.Certificate{spiffeCA, nextCA})},
		{name: "service-dns pem", path: "/clusters/east/.well-known/anchorage/trust-bundles/service-dns.pem",
			contentType: "application/pem-certificate-chain", cacheControl: "public, max-age=60", golden: "east-service-dns.pem",
			wantBytes: signers.EncodeCertificatesPEM([]*x509.Certificate{dnsCA})},
		{name: "spiffe CA", path: "/clusters/east/.well-known/anchorage/ca/spiffe/" + skidHex(spiffeCA) + ".der",
			contentType: "application/pkix-cert", cacheControl: "public, max-age=3600", wantBytes: spiffeCA.Raw},
		{name: "next spiffe CA", path: "/clusters/east/.well-known/anchorage/ca/spiffe/" + skidHex(nextCA) + ".der",
			contentType: "application/pkix-cert", cacheControl: "public, max-age=3600", wantBytes: nextCA.Raw},
		{name: "service-dns CA", path: "/clusters/east/.well-known/anchorage/ca/service-dns/" + skidHex(dnsCA) + ".der",
			contentType: "application/pkix-cert", cacheControl: "public, max-age=3600", wantBytes: dnsCA.Raw},
		{name: "trust-domain bundle", path: "/trust-domains/east.example/bundle",
			contentType: "application/json", cacheControl: "public, max-age=30", golden: "td-east.example-bundle.json"},
		{name: "west discovery", path: "/clusters/west/.well-known/openid-configuration",
			contentType: "application/json", cacheControl: "public, max-age=300",
			want: `{"issuer":"https://hub.example/clusters/west","jwks_uri":"https://hub.example/clusters/west/openid/v1/jwks",` +
				`"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":[],` +
				`"anchorage_trust_bundles_uri":"https://hub.example/clusters/west/.well-known/anchorage/trust-bundles"}`},
		{name: "west jwks (not reported)", path: "/clusters/west/openid/v1/jwks",
			contentType: "application/jwk-set+json", cacheControl: "public, max-age=60", want: `{"keys":[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, r, http.MethodGet, tc.path, nil)
			got := body(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			wantHeader := http.Header{
				"Content-Type":           {tc.contentType},
				"Cache-Control":          {tc.cacheControl},
				"Etag":                   {etagOf([]byte(got))},
				"Content-Length":         {strconv.Itoa(len(got))},
				"X-Content-Type-Options": {"nosniff"},
			}
			if !equalHeader(resp.Header, wantHeader) {
				t.Errorf("headers\n got %v\nwant %v", resp.Header, wantHeader)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("body\n got %s\nwant %s", got, tc.want)
			}
			if tc.wantBytes != nil && got != string(tc.wantBytes) {
				t.Errorf("body differs from the fixture")
			}
			if tc.golden != "" {
				golden(t, tc.golden, []byte(got))
			}
		})
	}

	if got := do(t, r, http.MethodGet, "/clusters/east/.well-known/openid-configuration", nil).Header.Get("ETag"); got != wantDiscoveryETag {
		t.Errorf("discovery ETag %s, want %s", got, wantDiscoveryETag)
	}
}

func skidHex(c *x509.Certificate) string { return hex.EncodeToString(c.SubjectKeyId) }

func equalHeader(got, want http.Header) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if strings.Join(got[k], "\x00") != strings.Join(v, "\x00") {
			return false
		}
	}
	return true
}

// TestAIAURLsAreServed follows the AIA caIssuers URL pkg/signers writes
// into each CA certificate and gets that very certificate back.
func TestAIAURLsAreServed(t *testing.T) {
	r := newRouter(newTestStore(t))
	for _, name := range []string{"east-spiffe", "east-spiffe-next", "east-service-dns"} {
		ca := readCert(t, name)
		signer := signers.SPIFFESignerName
		if strings.HasSuffix(name, "service-dns") {
			signer = signers.ServiceDNSSignerName
		}
		want := signers.CAIssuerURL(eastIssuer, signer, ca.SubjectKeyId)
		if len(ca.IssuingCertificateURL) != 1 || ca.IssuingCertificateURL[0] != want {
			t.Fatalf("%s: AIA %v, want %s", name, ca.IssuingCertificateURL, want)
		}
		resp := do(t, r, http.MethodGet, strings.TrimPrefix(want, hubURL), nil)
		if got := body(t, resp); resp.StatusCode != http.StatusOK || got != string(ca.Raw) {
			t.Errorf("%s: GET %s: status %d, body is the CA: %v", name, want, resp.StatusCode, got == string(ca.Raw))
		}
		if issuer, err := signers.IssuerFromCertificate(ca); err != nil || issuer != eastIssuer {
			t.Errorf("%s: IssuerFromCertificate = %q, %v", name, issuer, err)
		}
	}
}

// TestSPIFFEBundleFormat checks the served bundle against the SPIFFE rules
// directly (not through go-spiffe, which wrote it): one x509-svid key per
// anchor, exactly one certificate in x5c, no kid, sequence and hint.
func TestSPIFFEBundleFormat(t *testing.T) {
	r := newRouter(newTestStore(t))
	anchors := []*x509.Certificate{readCert(t, "east-spiffe"), readCert(t, "east-spiffe-next")}
	for _, tc := range []struct {
		path     string
		sequence uint64
		hint     int64
	}{
		{"/clusters/east/.well-known/spiffe-bundle", 7, 300},
		{"/trust-domains/east.example/bundle", 12, 30},
	} {
		t.Run(tc.path, func(t *testing.T) {
			raw := []byte(body(t, do(t, r, http.MethodGet, tc.path, nil)))
			var doc struct {
				Keys     []map[string]any `json:"keys"`
				Sequence *uint64          `json:"spiffe_sequence"`
				Hint     *int64           `json:"spiffe_refresh_hint"`
			}
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Sequence == nil || *doc.Sequence != tc.sequence || doc.Hint == nil || *doc.Hint != tc.hint {
				t.Errorf("spiffe_sequence %v, spiffe_refresh_hint %v; want %d, %d", doc.Sequence, doc.Hint, tc.sequence, tc.hint)
			}
			if len(doc.Keys) != len(anchors) {
				t.Fatalf("%d keys, want %d", len(doc.Keys), len(anchors))
			}
			for i, k := range doc.Keys {
				if _, ok := k["kid"]; ok {
					t.Errorf("key %d has a kid", i)
				}
				if k["use"] != "x509-svid" || k["kty"] != "EC" || k["crv"] != "P-256" {
					t.Errorf("key %d: use %v kty %v crv %v", i, k["use"], k["kty"], k["crv"])
				}
				x5c, _ := k["x5c"].([]any)
				if len(x5c) != 1 || x5c[0] != base64.StdEncoding.EncodeToString(anchors[i].Raw) {
					t.Errorf("key %d: x5c %v is not exactly anchor %d", i, x5c, i)
				}
			}
		})
	}
}

// TestSPIFFEBundleParses reads the served bundles back with go-spiffe.
func TestSPIFFEBundleParses(t *testing.T) {
	r := newRouter(newTestStore(t))
	td := spiffeid.RequireTrustDomainFromString("east.example")
	anchors := []*x509.Certificate{readCert(t, "east-spiffe"), readCert(t, "east-spiffe-next")}
	for _, tc := range []struct {
		path     string
		sequence uint64
		hint     time.Duration
	}{
		{"/clusters/east/.well-known/spiffe-bundle", 7, 5 * time.Minute},
		{"/trust-domains/east.example/bundle", 12, 30 * time.Second},
	} {
		t.Run(tc.path, func(t *testing.T) {
			raw := []byte(body(t, do(t, r, http.MethodGet, tc.path, nil)))
			b, err := spiffebundle.Parse(td, raw)
			if err != nil {
				t.Fatal(err)
			}
			if !b.Equal(func() *spiffebundle.Bundle {
				w := spiffebundle.FromX509Authorities(td, anchors)
				w.SetSequenceNumber(tc.sequence)
				w.SetRefreshHint(tc.hint)
				return w
			}()) {
				t.Errorf("parsed bundle differs from the anchors")
			}
			if seq, ok := b.SequenceNumber(); !ok || seq != tc.sequence {
				t.Errorf("sequence %d %v", seq, ok)
			}
			if hint, ok := b.RefreshHint(); !ok || hint != tc.hint {
				t.Errorf("refresh hint %v %v", hint, ok)
			}
			if len(b.JWTAuthorities()) != 0 {
				t.Errorf("JWT authorities %v", b.JWTAuthorities())
			}
			// Round trip: go-spiffe re-encodes exactly the served bytes.
			again, err := b.Marshal()
			if err != nil || string(again) != string(raw) {
				t.Errorf("re-marshalled bundle differs:\n%s\n%s", again, raw)
			}
			xb, err := b.GetX509BundleForTrustDomain(td)
			if err != nil || !xb.Equal(x509bundle.FromX509Authorities(td, anchors)) {
				t.Errorf("x509 bundle: %v", err)
			}
		})
	}
	// The PEM trust bundle is the same anchors, as x509bundle reads PEM.
	pemBody := body(t, do(t, r, http.MethodGet, "/clusters/east/.well-known/anchorage/trust-bundles/spiffe.pem", nil))
	xb, err := x509bundle.Parse(td, []byte(pemBody))
	if err != nil || !xb.Equal(x509bundle.FromX509Authorities(td, anchors)) {
		t.Errorf("x509bundle.Parse of the PEM bundle: %v", err)
	}
}

func TestBuildSPIFFEBundleErrors(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("east.example")
	east, west := readCert(t, "east-spiffe"), readCert(t, "west-spiffe")
	leaf := *east
	leaf.IsCA = false
	tests := []struct {
		name    string
		anchors []*x509.Certificate
		hint    time.Duration
		want    string
	}{
		{"no anchors", nil, 0, "SPIFFE bundle for east.example: no anchors; an empty bundle would revoke every SVID of the trust domain"},
		{"other trust domain", []*x509.Certificate{east, west}, 0, `SPIFFE bundle for east.example: anchor 1 ("CN=` + west.Subject.CommonName + `,O=anchorage") belongs to trust domain "west.example"`},
		{"not a CA", []*x509.Certificate{&leaf}, 0, `SPIFFE bundle for east.example: certificate 0 ("CN=` + east.Subject.CommonName + `,O=anchorage") is not a CA certificate`},
		{"negative hint", []*x509.Certificate{east}, -time.Second, "SPIFFE bundle for east.example: negative refresh hint -1s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildSPIFFEBundle(td, tc.anchors, 1, tc.hint)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v\nwant  %s", err, tc.want)
			}
		})
	}
	// Duplicates are dropped, the default hint applies, sub-second hints
	// round up as go-spiffe encodes them.
	b, err := BuildSPIFFEBundle(td, []*x509.Certificate{east, east}, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := spiffebundle.Parse(td, b)
	if err != nil || len(parsed.X509Authorities()) != 1 {
		t.Fatalf("parsed %v, %v", parsed, err)
	}
	if hint, _ := parsed.RefreshHint(); hint != DefaultRefreshHint {
		t.Errorf("default hint %v", hint)
	}
}

// TestSPIFFEMaxAgeNeverExceedsHint: a cache must not serve a bundle older
// than the interval consumers poll at.
func TestSPIFFEMaxAgeNeverExceedsHint(t *testing.T) {
	s := newTestStore(t)
	r := newRouter(s)
	for _, tc := range []struct {
		hint time.Duration
		want string
	}{
		{time.Hour, "public, max-age=60"},
		{time.Minute, "public, max-age=60"},
		{10 * time.Second, "public, max-age=10"},
		{1500 * time.Millisecond, "public, max-age=2"}, // hint published as 2 (rounded up)
		{time.Millisecond, "public, max-age=1"},
	} {
		m := eastMember(t)
		m.SPIFFERefreshHint = tc.hint
		if err := s.SetMember(m); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTrustDomain(TrustDomainBundle{TrustDomain: "east.example", Anchors: m.Anchors[signers.SPIFFESignerName], RefreshHint: tc.hint}); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/clusters/east/.well-known/spiffe-bundle", "/trust-domains/east.example/bundle"} {
			if got := do(t, r, http.MethodGet, path, nil).Header.Get("Cache-Control"); got != tc.want {
				t.Errorf("hint %v, %s: Cache-Control %q, want %q", tc.hint, path, got, tc.want)
			}
		}
	}
}

func TestSetMemberErrors(t *testing.T) {
	s := newTestStore(t)
	east := eastMember(t)
	tests := []struct {
		name   string
		change func(m *Member)
		want   string
	}{
		{"bad name", func(m *Member) { m.Name = "East" }, `member name "East" is not a DNS label (lowercase letters, digits and '-', at most 63)`},
		{"foreign issuer", func(m *Member) { m.Issuer = "https://oidc.eks.example/id/1" },
			`member "east": issuer "https://oidc.eks.example/id/1" is not served by this hub: set the cluster's --service-account-issuer to "https://hub.example/clusters/east"`},
		{"spiffe ID as trust domain", func(m *Member) { m.TrustDomain = "spiffe://east.example" }, `member "east": trust domain "spiffe://east.example": give the bare name "east.example"`},
		{"no trust domain", func(m *Member) { m.TrustDomain = "" }, `member "east": trust domain "": trust domain is missing`},
		{"bad JWKS", func(m *Member) { m.JWKS = []byte(`{}`) }, `member "east": JWKS: the "keys" member is missing`},
		{"bad agent service account", func(m *Member) { m.AgentServiceAccount = "member-agent" }, `member "east": agent service account "member-agent": want namespace/name`},
		{"anchor of another trust domain", func(m *Member) {
			m.Anchors = map[string][]*x509.Certificate{signers.SPIFFESignerName: {readCert(t, "west-spiffe")}}
		}, `member "east": SPIFFE bundle for east.example: anchor 0 ("CN=` + readCert(t, "west-spiffe").Subject.CommonName + `,O=anchorage") belongs to trust domain "west.example"`},
		{"slug clash", func(m *Member) {
			m.Anchors = map[string][]*x509.Certificate{"a.example/spiffe": {readCert(t, "east-spiffe")}, signers.SPIFFESignerName: {readCert(t, "east-spiffe")}}
		}, `member "east": signers "a.example/spiffe" and "anchorage.dev/spiffe" share the URL slug "spiffe"`},
		{"bad slug", func(m *Member) {
			m.Anchors = map[string][]*x509.Certificate{"example.com/Spiffe": {readCert(t, "east-spiffe")}}
		}, `member "east": signer "example.com/Spiffe" has no usable URL slug ("Spiffe")`},
		{"intermediates without anchors", func(m *Member) {
			m.Intermediates = map[string][]*x509.Certificate{"example.com/other": {readCert(t, "east-spiffe")}}
		}, `member "east": example.com/other has intermediates but no anchors`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := east
			m.Anchors = east.Anchors
			tc.change(&m)
			err := s.SetMember(m)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v\nwant  %s", err, tc.want)
			}
		})
	}
	// A failed update leaves the served documents alone (fail-static).
	resp := do(t, newRouter(s), http.MethodGet, "/clusters/east/.well-known/openid-configuration", nil)
	if got := body(t, resp); got != wantDiscovery {
		t.Errorf("after failed updates discovery is %s", got)
	}
}

func TestNewStoreHubURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want string // "" = accepted
	}{
		{"https://hub.example", ""},
		{"https://hub.example/", ""},
		{"https://hub.example/anchorage", ""},
		{"http://127.0.0.1:8443", ""},
		{"http://localhost:8443", ""},
		{"http://hub.example", `hub URL "http://hub.example": OIDC issuers must be https (http is accepted on loopback only)`},
		{"hub.example", `hub URL "hub.example": want an absolute URL such as https://hub.example`},
		{"https://hub.example?x=1", `hub URL "https://hub.example?x=1": must not have a query, fragment or user info`},
		{"https://u@hub.example", `hub URL "https://u@hub.example": must not have a query, fragment or user info`},
	} {
		_, err := NewStore(Options{HubURL: tc.url})
		if got := errString(err); got != tc.want {
			t.Errorf("NewStore(%q): %q, want %q", tc.url, got, tc.want)
		}
	}
	s, _ := NewStore(Options{HubURL: "https://hub.example/"})
	if s.HubURL() != "https://hub.example" || s.Issuer("east") != eastIssuer {
		t.Errorf("HubURL %q Issuer %q", s.HubURL(), s.Issuer("east"))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestDeleteAndTrustDomains: deletions take effect, and a trust domain
// without anchors is refused rather than published empty.
func TestDeleteAndTrustDomains(t *testing.T) {
	s := newTestStore(t)
	r := newRouter(s)
	s.DeleteMember("west")
	s.DeleteMember("nobody")
	s.DeleteTrustDomain("east.example")
	for path, want := range map[string]string{
		"/clusters/west/openid/v1/jwks":      `{"error":"cluster \"west\" is not a member of this hub"}` + "\n",
		"/trust-domains/east.example/bundle": `{"error":"trust domain \"east.example\" is not served by this hub"}` + "\n",
	} {
		resp := do(t, r, http.MethodGet, path, nil)
		if got := body(t, resp); resp.StatusCode != http.StatusNotFound || got != want {
			t.Errorf("%s: %d %s", path, resp.StatusCode, got)
		}
	}
	err := s.SetTrustDomain(TrustDomainBundle{TrustDomain: "east.example"})
	if want := "SPIFFE bundle for east.example: no anchors; an empty bundle would revoke every SVID of the trust domain"; errString(err) != want {
		t.Errorf("empty trust domain: %v", err)
	}
	// A member without SPIFFE anchors has no SPIFFE bundle (404), but
	// still its discovery, JWKS and other bundles.
	m := eastMember(t)
	delete(m.Anchors, signers.SPIFFESignerName)
	if err := s.SetMember(m); err != nil {
		t.Fatal(err)
	}
	resp := do(t, r, http.MethodGet, "/clusters/east/.well-known/spiffe-bundle", nil)
	if got := body(t, resp); resp.StatusCode != http.StatusNotFound || got != `{"error":"cluster \"east\" has not reported anchorage.dev/spiffe anchors"}`+"\n" {
		t.Errorf("spiffe bundle without anchors: %d %s", resp.StatusCode, got)
	}
	resp = do(t, r, http.MethodGet, "/clusters/east/.well-known/anchorage/trust-bundles", nil)
	if got := body(t, resp); got != `{"trust_bundles":{"anchorage.dev/service-dns":"https://hub.example/clusters/east/.well-known/anchorage/trust-bundles/service-dns.pem"}}` {
		t.Errorf("index: %s", got)
	}
}

// TestCACertificateSelection: intermediates are AIA documents only, and of
// two certificates with one key id the one valid longest is served.
func TestCACertificateSelection(t *testing.T) {
	s := newTestStore(t)
	r := newRouter(s)
	profile := signers.SPIFFECAProfile("east", "east.example", eastIssuer)
	anchor := readCert(t, "east-spiffe")
	renewed, err := signers.NewCA(signers.Env{Clock: fixedClock(t0.Add(48 * time.Hour))}, profile, readKey(t, "ca-spiffe"))
	if err != nil {
		t.Fatal(err)
	}
	intermediate, err := signers.NewCA(signers.Env{Clock: fixedClock(t0)}, profile, readKey(t, "other-ec"))
	if err != nil {
		t.Fatal(err)
	}
	m := eastMember(t)
	m.Anchors = map[string][]*x509.Certificate{signers.SPIFFESignerName: {anchor, renewed.Certificate}}
	m.Intermediates = map[string][]*x509.Certificate{signers.SPIFFESignerName: {intermediate.Certificate}}
	if err := s.SetMember(m); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp := do(t, r, http.MethodGet, path, nil)
		return resp.StatusCode, body(t, resp)
	}
	const ca = "/clusters/east/.well-known/anchorage/ca/spiffe/"
	if skidHex(renewed.Certificate) != skidHex(anchor) {
		t.Fatal("the renewed CA should share the key id")
	}
	if status, got := get(ca + skidHex(anchor) + ".der"); status != 200 || got != string(renewed.Certificate.Raw) {
		t.Errorf("shared key id: %d, served the renewed CA: %v", status, got == string(renewed.Certificate.Raw))
	}
	if status, got := get(ca + skidHex(intermediate.Certificate) + ".der"); status != 200 || got != string(intermediate.Certificate.Raw) {
		t.Errorf("intermediate: %d", status)
	}
	_, pemBody := get("/clusters/east/.well-known/anchorage/trust-bundles/spiffe.pem")
	if pemBody != string(signers.EncodeCertificatesPEM([]*x509.Certificate{anchor, renewed.Certificate})) {
		t.Errorf("PEM bundle is not exactly the anchors:\n%s", pemBody)
	}
	_, raw := get(bundlePath)
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("east.example"), []byte(raw))
	if err != nil || len(b.X509Authorities()) != 2 || b.HasX509Authority(intermediate.Certificate) {
		t.Errorf("SPIFFE bundle: %v, %d authorities", err, len(b.X509Authorities()))
	}
}
