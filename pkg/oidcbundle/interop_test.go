package oidcbundle

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// tlsHub serves a store over real TLS, the way relying parties meet it.
// The hub URL is the server's, so it is only known once it listens.
func tlsHub(t *testing.T) (*httptest.Server, *Store) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	store, err := NewStore(Options{HubURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = newRouter(store)
	m := eastMember(t)
	m.Issuer = store.Issuer("east")
	if err := store.SetMember(m); err != nil {
		t.Fatal(err)
	}
	if err := store.SetTrustDomain(TrustDomainBundle{TrustDomain: "east.example", Anchors: m.Anchors[signers.SPIFFESignerName], Sequence: 3, RefreshHint: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return srv, store
}

// TestGoOIDCDiscovery: go-oidc discovers the member's issuer at the hub,
// reads the anchorage extension, and verifies a real token against the
// served JWKS (its RemoteKeySet fetches /openid/v1/jwks).
func TestGoOIDCDiscovery(t *testing.T) {
	srv, store := tlsHub(t)
	ctx := oidc.ClientContext(context.Background(), srv.Client())
	issuer := store.Issuer("east")

	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	var extra struct {
		JWKSURI      string   `json:"jwks_uri"`
		Algs         []string `json:"id_token_signing_alg_values_supported"`
		TrustBundles string   `json:"anchorage_trust_bundles_uri"`
	}
	if err := p.Claims(&extra); err != nil {
		t.Fatal(err)
	}
	if extra.JWKSURI != issuer+"/openid/v1/jwks" || extra.TrustBundles != issuer+"/.well-known/anchorage/trust-bundles" ||
		strings.Join(extra.Algs, ",") != "ES256,RS256" {
		t.Errorf("discovery %+v", extra)
	}

	// The trust-bundles URI answers with the index.
	resp, err := srv.Client().Get(extra.TrustBundles)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(idx), issuer+"/.well-known/anchorage/trust-bundles/spiffe.pem") {
		t.Errorf("trust-bundles index: %d %s", resp.StatusCode, idx)
	}

	// A relying party with nothing but the issuer URL verifies tokens.
	for _, tc := range []struct {
		key string
		alg jose.SignatureAlgorithm
		kid string
	}{{"token-rsa", jose.RS256, kidRSA}, {"token-ec", jose.ES256, kidEC}} {
		tok := sign(t, readKey(t, tc.key), tc.alg, tc.kid, claims(func(c map[string]any) {
			c["iss"] = issuer
			c["aud"] = []string{"some-relying-party"}
			c["exp"] = time.Now().Add(time.Hour).Unix()
			c["iat"], c["nbf"] = time.Now().Unix(), time.Now().Unix()
		}))
		idt, err := p.Verifier(&oidc.Config{ClientID: "some-relying-party"}).Verify(ctx, tok)
		if err != nil {
			t.Errorf("%s: %v", tc.alg, err)
			continue
		}
		if idt.Subject != agentSub {
			t.Errorf("subject %q", idt.Subject)
		}
	}

	// And an unknown cluster is not an issuer.
	if _, err := oidc.NewProvider(ctx, store.Issuer("north")); err == nil {
		t.Error("discovery of an unknown cluster succeeded")
	}
}

// TestGoSPIFFEFederation: go-spiffe's bundle endpoint client (https_web)
// fetches both bundle endpoints, and fails, rather than reading an empty
// bundle, where the hub has none (fail-static for SPIRE and go-spiffe).
func TestGoSPIFFEFederation(t *testing.T) {
	srv, store := tlsHub(t)
	td := spiffeid.RequireTrustDomainFromString("east.example")
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	ctx := context.Background()
	anchors := []*x509.Certificate{readCert(t, "east-spiffe"), readCert(t, "east-spiffe-next")}

	for _, url := range []string{store.Issuer("east") + "/.well-known/spiffe-bundle", srv.URL + "/trust-domains/east.example/bundle"} {
		b, err := federation.FetchBundle(ctx, td, url, federation.WithWebPKIRoots(roots))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if !b.X509Bundle().Equal(x509bundle.FromX509Authorities(td, anchors)) {
			t.Errorf("%s: authorities differ", url)
		}
	}
	_, err := federation.FetchBundle(ctx, spiffeid.RequireTrustDomainFromString("west.example"), srv.URL+"/trust-domains/west.example/bundle", federation.WithWebPKIRoots(roots))
	if err == nil || !strings.Contains(err.Error(), "no authorities found") {
		t.Errorf("missing trust domain: %v", err)
	}
}

// TestLeafVerifiesAgainstServedDocuments: an X509-SVID issued by the
// member's CA verifies against the served SPIFFE bundle, and its AIA URL
// leads to the CA that signed it.
func TestLeafVerifiesAgainstServedDocuments(t *testing.T) {
	r := newRouter(newTestStore(t))
	td := spiffeid.RequireTrustDomainFromString("east.example")
	ca, err := signers.NewCA(signers.Env{Clock: fixedClock(t0)}, signers.SPIFFECAProfile("east", td.Name(), eastIssuer), readKey(t, "ca-spiffe"))
	if err != nil {
		t.Fatal(err)
	}
	// The same key, profile and clock as the committed east-spiffe
	// certificate: the same issuer (same name and SKID, so the same AIA
	// URL), only the ECDSA signature differs.
	ca.State = signers.StateActive
	pool := &signers.Pool{Signer: signers.SPIFFESignerName, CAs: []*signers.CA{ca}}
	tmpl, err := signers.SPIFFELeaf(td, "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := signers.Sign(signers.Env{Clock: fixedClock(t0)}, pool, eastIssuer, tmpl, leafKey.Public(), 3600)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := issued.Chain()
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]

	// AIA: the URL in the leaf is served, and the CA there signed the leaf.
	aiaURL := leaf.IssuingCertificateURL[0]
	resp := do(t, r, http.MethodGet, strings.TrimPrefix(aiaURL, hubURL), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("AIA %s: %d", aiaURL, resp.StatusCode)
	}
	der, _ := io.ReadAll(resp.Body)
	served, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(served); err != nil {
		t.Errorf("the AIA certificate did not sign the leaf: %v", err)
	}

	// The leaf chains to the served SPIFFE bundle.
	raw, _ := io.ReadAll(do(t, r, http.MethodGet, bundlePath, nil).Body)
	sb, err := spiffebundle.Parse(td, raw)
	if err != nil {
		t.Fatal(err)
	}
	bundle := sb.X509Bundle()
	if !bundle.HasX509Authority(served) {
		t.Fatalf("the AIA certificate is not in the served bundle")
	}
	id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(t0.Add(time.Minute)))
	if err != nil || id.String() != "spiffe://east.example/ns/shop/sa/web" {
		t.Errorf("x509svid.Verify: %v %v", id, err)
	}
}
