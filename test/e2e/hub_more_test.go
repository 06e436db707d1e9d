package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr/testr"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	anchfed "github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// An external trust domain (a SPIRE deployment, here go-spiffe's own
// bundle endpoint) is polled and served at /trust-domains/<td>/bundle like
// any member's.
func TestHubServesExternalTrustDomain(t *testing.T) {
	localcluster.RequireAssets(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	td := spiffeid.RequireTrustDomainFromString("spire.example")
	ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile("spire", td.Name(), "https://spire.invalid"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bundle := spiffebundle.New(td)
	bundle.SetX509Authorities([]*x509.Certificate{ca.Anchor()})
	bundle.SetRefreshHint(time.Minute)
	bundle.SetSequenceNumber(42)
	h, err := federation.NewHandler(td, bundle)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "endpoint-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	e := startHub(t, ctx, func(o *hubapp.Options) { o.BundleEndpointCAFile = caFile })
	if err := e.hubCl.Client.Create(ctx, &hubv1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: "spire"}, Spec: hubv1.TrustDomainSpec{
		TrustDomain:    td.Name(),
		BundleEndpoint: hubv1.BundleEndpoint{URL: srv.URL, Profile: hubv1.ProfileHTTPSWeb},
	}}); err != nil {
		t.Fatal(err)
	}
	var body []byte
	poll(t, 30*time.Second, "the external bundle served by the hub", func() bool {
		resp, b := e.get(e.url + "/trust-domains/spire.example/bundle")
		body = b
		return resp.StatusCode == http.StatusOK
	})
	got, err := spiffebundle.Parse(td, body)
	if err != nil {
		t.Fatal(err)
	}
	if auth := got.X509Authorities(); len(auth) != 1 || !auth[0].Equal(ca.Anchor()) {
		t.Errorf("served authorities %d, want the endpoint's CA", len(auth))
	}
	if seq, _ := got.SequenceNumber(); seq != 42 {
		t.Errorf("sequence %d, want the endpoint's 42", seq)
	}
	// go-spiffe's own client reads the hub's endpoint too.
	if _, err := federation.FetchBundle(ctx, td, e.url+"/trust-domains/spire.example/bundle", federation.WithWebPKIRoots(rootsOf(t, e.caFile))); err != nil {
		t.Errorf("go-spiffe cannot fetch from the hub: %v", err)
	}
}

// The member's service-account keys rotate through a report authenticated
// with a key the hub already knows; afterwards tokens signed with the new
// key are accepted, and tokens signed with a key never reported are not.
func TestHubJWKSRotation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx)
	east := e.startMember("east", "east.example")
	poll(t, 60*time.Second, "east ready", func() bool {
		return meta.IsStatusConditionTrue(e.member("east").Status.Conditions, hubv1.ConditionReady)
	})
	east.stop()
	issuer := e.url + "/clusters/east"

	var old jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(e.member("east").Status.JWKS), &old); err != nil {
		t.Fatal(err)
	}
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	strangerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rotated := old
	rotated.Keys = append(rotated.Keys, jose.JSONWebKey{Key: &newKey.PublicKey, KeyID: "rotated", Algorithm: "ES256", Use: "sig"})
	rotatedJSON, _ := json.Marshal(rotated)
	pool := east.pool(t, signers.SPIFFESignerName)
	rep := anchfed.Report{Anchors: map[string]string{
		signers.SPIFFESignerName:     string(signers.EncodeCertificatesPEM(pool.Anchors(time.Now()))),
		signers.ServiceDNSSignerName: string(signers.EncodeCertificatesPEM(east.pool(t, signers.ServiceDNSSignerName).Anchors(time.Now()))),
	}, JWKS: rotatedJSON}

	forge := func(key *ecdsa.PrivateKey, kid string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) {
			sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
			if err != nil {
				return "", err
			}
			now := time.Now()
			return jwt.Signed(sig).Claims(jwt.Claims{Issuer: issuer, Subject: "system:serviceaccount:anchorage-system:member-agent",
				Audience: jwt.Audience{e.url}, IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}).Serialize()
		}
	}
	client := func(token func(context.Context) (string, error)) *anchfed.Client {
		return &anchfed.Client{HubURL: e.url, Cluster: "east", HTTP: e.https, Token: token}
	}

	// Before the rotation, the new key is unknown.
	if err := client(forge(newKey, "rotated")).Report(ctx, rep); !anchfed.IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("a token of a key not yet reported: %v, want 401", err)
	}
	// Rotation, authenticated by the apiserver's current key.
	known := func(ctx context.Context) (string, error) {
		return east.cl.Token(ctx, "anchorage-system", "member-agent", []string{e.url}, 10*time.Minute)
	}
	if err := client(known).Report(ctx, rep); err != nil {
		t.Fatalf("rotating the JWKS: %v", err)
	}
	poll(t, 20*time.Second, "a token of the rotated-in key accepted", func() bool {
		return client(forge(newKey, "rotated")).Report(ctx, rep) == nil
	})
	if err := client(forge(strangerKey, "rotated")).Report(ctx, rep); !anchfed.IsStatus(err, http.StatusUnauthorized) {
		t.Errorf("a token signed by a key never reported, under a known kid: %v, want 401", err)
	}
}

func rootsOf(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	return httpsClient(t, caFile).Transport.(*http.Transport).TLSClientConfig.RootCAs
}

// A member that stops reporting is Ready=False after the report lease, with
// an Event, and its documents stay served (fail-static).
func TestHubMarksSilentMemberNotReady(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx, func(o *hubapp.Options) { o.ReportLease = 3 * time.Second })
	east := e.startMember("east", "east.example")
	poll(t, 60*time.Second, "east ready", func() bool {
		return meta.IsStatusConditionTrue(e.member("east").Status.Conditions, hubv1.ConditionReady)
	})
	east.stop()
	stopped := time.Now()
	poll(t, 30*time.Second, "east not ready", func() bool {
		c := meta.FindStatusCondition(e.member("east").Status.Conditions, hubv1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == hubv1.ReasonReportStale
	})
	t.Logf("Ready=False %v after the agent stopped (lease 3s)", time.Since(stopped).Round(100*time.Millisecond))
	var evs eventsv1.EventList
	if err := e.hubCl.Client.List(ctx, &evs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs.Items {
		found = found || (ev.Regarding.Name == "east" && ev.Reason == hubv1.ReasonReportStale)
	}
	if !found {
		t.Error("no ReportStale Event on the MemberCluster")
	}
	if resp, _ := e.get(e.url + "/clusters/east/.well-known/spiffe-bundle"); resp.StatusCode != http.StatusOK {
		t.Errorf("a silent member's bundle must stay served, got %d", resp.StatusCode)
	}
}

// On HTTP/1.1 a long poll outlasts the server's ReadTimeout, so the hub
// keeps that timeout for every route: net/http lifts the read deadline
// once the request is read (connReader.startBackgroundRead), before the
// handler waits, and the request's context stays alive.
func TestHubLongPollOutlastsReadTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const pollTimeout = 2 * time.Second
	e := startHub(t, ctx, func(o *hubapp.Options) { o.LongPollTimeout, o.ReportLease = pollTimeout, 5*time.Minute })
	east := e.startMember("east", "east.example")
	poll(t, 60*time.Second, "east ready", func() bool {
		return meta.IsStatusConditionTrue(e.member("east").Status.Conditions, hubv1.ConditionReady)
	})
	east.stop() // nothing changes east's set from here on

	srv := httptest.NewUnstartedServer(nil)
	srv.Config = hubapp.HTTPServer(e.hub.Router, nil, testr.New(t))
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	http1 := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	token, err := east.cl.Token(ctx, "anchorage-system", "member-agent", []string{e.url}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bundles := func(after int64) (*http.Response, []byte) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/apis/v1/members/east/bundles?after=%d", srv.URL, after), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}

	resp, body := bundles(0)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		t.Fatalf("first poll: %s %s: %s, want 200 over HTTP/1.1", resp.Proto, resp.Status, body)
	}
	var set anchfed.BundleSet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, body = bundles(set.Sequence)
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("poll after %d: %s: %s, want 204", set.Sequence, resp.Status, body)
	}
	if elapsed < pollTimeout {
		t.Errorf("the poll answered 204 after %s, before the long-poll timeout %s (the read timeout is %s)", elapsed, pollTimeout, srv.Config.ReadTimeout)
	}
}
