package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	"github.com/anchorage-dev/anchorage/internal/hub/api"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Every bad request gets the right status and a clear error, and nothing
// in the hub's state changes. (Expired and forged tokens, bad algorithms
// and JWKS are covered row by row in pkg/oidcbundle's verifier tests; here
// the tokens are real ones from real apiservers.)
func TestHubRejectsBadInput(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A lease longer than the test: east stops reporting and its record
	// must not change for that reason while the table runs.
	e := startHub(t, ctx, func(o *hubapp.Options) { o.ReportLease = 5 * time.Minute })
	east := e.startMember("east", "east.example")
	poll(t, 60*time.Second, "east ready", func() bool {
		mc := e.member("east")
		return meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionReady) && len(mc.Status.Anchors) == 2
	})
	east.stop() // freeze east's record

	// west joins with the hub cluster's own keys, so that tokens of one
	// member can be tried on another's record.
	e.register("west", "west.example")
	hubJWKS, err := e.hubCl.Clientset.Discovery().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	westClient := &federation.Client{HubURL: e.url, Cluster: "west", HTTP: e.https}
	if err := westClient.Join(ctx, federation.JoinRequest{Token: e.joinToken("west"), JWKS: hubJWKS}); err != nil {
		t.Fatal(err)
	}
	// late's token has expired; pending's is waiting.
	e.register("late", "late.example")
	e.joinToken("late")
	var lateSecret corev1.Secret
	if err := e.hubCl.Client.Get(ctx, client.ObjectKey{Namespace: "anchorage-hub", Name: api.JoinTokenSecretName("late")}, &lateSecret); err != nil {
		t.Fatal(err)
	}
	lateSecret.Annotations[api.ExpiresAtAnnotation] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	if err := e.hubCl.Client.Update(ctx, &lateSecret); err != nil {
		t.Fatal(err)
	}
	e.register("pending", "pending.example")
	pendingToken := e.joinToken("pending")
	time.Sleep(time.Second) // let the hub's caches see all of it

	eastToken := func(aud string) string {
		tok, err := east.cl.Token(ctx, "anchorage-system", "member-agent", []string{aud}, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := eastToken(e.url)
	otherSA, err := east.cl.Token(ctx, "default", "intruder", []string{e.url}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	hubToken, err := e.hubCl.Token(ctx, "default", "someone", []string{e.url}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pool := east.pool(t, signers.SPIFFESignerName)
	caPEM := string(signers.EncodeCertificatesPEM(pool.Anchors(time.Now())))
	report := func(anchors map[string]string) string {
		b, _ := json.Marshal(federation.Report{Anchors: anchors, JWKS: json.RawMessage(e.member("east").Status.JWKS)})
		return string(b)
	}
	leafPEM := issueLeafPEM(t, pool)
	// east's keys, with another public key under the kid of each.
	var eastKeys jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(e.member("east").Status.JWKS), &eastKeys); err != nil {
		t.Fatal(err)
	}
	for i := range eastKeys.Keys {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		eastKeys.Keys[i] = jose.JSONWebKey{Key: &k.PublicKey, KeyID: eastKeys.Keys[i].KeyID, Algorithm: "ES256", Use: "sig"}
	}
	swappedJWKS, _ := json.Marshal(eastKeys)
	maxSeq := strconv.FormatInt(math.MaxInt64, 10)

	snapshot := func() map[string]string {
		out := map[string]string{}
		var mcs hubv1.MemberClusterList
		if err := e.hubCl.Client.List(ctx, &mcs); err != nil {
			t.Fatal(err)
		}
		for _, mc := range mcs.Items {
			out["mc/"+mc.Name] = mc.ResourceVersion
		}
		var secrets corev1.SecretList
		if err := e.hubCl.Client.List(ctx, &secrets, client.InNamespace("anchorage-hub")); err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets.Items {
			out["secret/"+s.Name] = s.ResourceVersion
		}
		return out
	}
	before := snapshot()

	for _, tc := range []struct {
		name, method, path, token, contentType, body string
		status                                       int
		errContains                                  string
	}{
		{"report without a token", "PUT", "/apis/v1/members/east/report", "", "", report(map[string]string{signers.SPIFFESignerName: caPEM}), 401, "missing Authorization"},
		{"token for another audience", "PUT", "/apis/v1/members/east/report", eastToken("https://not-the-hub.example"), "", report(nil), 401, "audience"},
		{"token of another service account", "PUT", "/apis/v1/members/east/report", otherSA, "", report(nil), 401, "system:serviceaccount:default:intruder"},
		{"token from an unknown issuer", "PUT", "/apis/v1/members/east/report", hubToken, "", report(nil), 401, "is not in the member's JWKS"},
		{"member A's token on member B's record", "PUT", "/apis/v1/members/west/report", good, "", report(nil), 401, ""},
		{"unknown cluster", "PUT", "/apis/v1/members/nosuch/report", good, "", report(nil), 404, "not a member of this hub"},
		{"not a CA certificate", "PUT", "/apis/v1/members/east/report", good, "", report(map[string]string{signers.SPIFFESignerName: leafPEM}), 400, "is not a CA certificate"},
		{"garbage PEM", "PUT", "/apis/v1/members/east/report", good, "", report(map[string]string{signers.SPIFFESignerName: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}), 400, "anchors of anchorage.dev/spiffe"},
		{"unknown signer", "PUT", "/apis/v1/members/east/report", good, "", report(map[string]string{"example.com/signer": caPEM}), 400, "unknown signer"},
		{"a CA in no rotation state", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":{},"jwks":` + e.member("east").Status.JWKS + `,"cas":[{"signer":"anchorage.dev/spiffe","subjectKeyID":"0a","state":"bogus"}]}`, 400, "not next, active or retired"},
		{"JWKS without the key that signed the token", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":{},"jwks":` + string(hubJWKS) + `}`, 400, "the reported JWKS must keep key"},
		{"JWKS with another key under the token's kid", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":{},"jwks":` + string(swappedJWKS) + `}`, 400, "or re-join the member"},
		{"empty JWKS in a report", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":{},"jwks":{"keys":[]}}`, 400, "jwks has no keys"},
		{"missing JWKS", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":{}}`, 400, "jwks is required"},
		{"malformed JSON", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":`, 400, "malformed JSON"},
		{"unknown field", "PUT", "/apis/v1/members/east/report", good, "", `{"anchors":{},"jwks":{},"admin":true}`, 400, "unknown field"},
		{"not JSON", "PUT", "/apis/v1/members/east/report", good, "text/plain", `hello`, 415, "application/json"},
		{"body over the limit", "PUT", "/apis/v1/members/east/report", good, "", `{"agentVersion":"` + strings.Repeat("x", federation.MaxBodyBytes) + `"}`, 413, "body over"},
		{"bundles without a token", "GET", "/apis/v1/members/east/bundles", "", "", "", 401, "missing Authorization"},
		{"bundles after a negative sequence", "GET", "/apis/v1/members/east/bundles?after=-1", good, "", "", 400, "after="},
		{"bundles after garbage", "GET", "/apis/v1/members/east/bundles?after=latest", good, "", "", 400, "after="},
		{"member A's token on member B's bundles", "GET", "/apis/v1/members/west/bundles", good, "", "", 401, ""},
		{"member A's ack on member B's record", "POST", "/apis/v1/members/west/ack", good, "", `{"sequence":1,"bundlesDigest":"` + strings.Repeat("ab", 32) + `"}`, 401, ""},
		{"ack with a malformed digest", "POST", "/apis/v1/members/east/ack", good, "", `{"sequence":1,"bundlesDigest":"xyz"}`, 400, "bundlesDigest"},
		{"ack of sequence 0", "POST", "/apis/v1/members/east/ack", good, "", `{"sequence":0,"bundlesDigest":"` + strings.Repeat("ab", 32) + `"}`, 400, "sequence"},
		{"ack above the published sequence", "POST", "/apis/v1/members/east/ack", good, "", `{"sequence":` + maxSeq + `,"bundlesDigest":"` + strings.Repeat("ab", 32) + `"}`, 409, "the sequence of the bundle set this hub replica publishes"},
		{"ack with an unknown field", "POST", "/apis/v1/members/east/ack", good, "", `{"sequence":1,"applied":true}`, 400, "unknown field"},
		{"reused join token", "POST", "/apis/v1/members/east/join", "", "", `{"token":"anything","jwks":` + e.member("east").Status.JWKS + `}`, 409, "already joined"},
		{"wrong join token", "POST", "/apis/v1/members/pending/join", "", "", `{"token":"wrong-` + pendingToken[:4] + `","jwks":` + string(hubJWKS) + `}`, 401, "wrong join token"},
		{"expired join token", "POST", "/apis/v1/members/late/join", "", "", `{"token":"` + string(lateSecret.Data[api.TokenKey]) + `","jwks":` + string(hubJWKS) + `}`, 401, "expired"},
		{"join with a private key as JWKS", "POST", "/apis/v1/members/pending/join", "", "", `{"token":"` + pendingToken + `","jwks":{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"x"}]}}`, 400, "jwks"},
		{"join with an empty key set", "POST", "/apis/v1/members/pending/join", "", "", `{"token":"` + pendingToken + `","jwks":{"keys":[]}}`, 400, "jwks has no keys"},
		{"wrong method", "GET", "/apis/v1/members/east/report", good, "", "", 405, "method not allowed"},
		{"unknown call", "POST", "/apis/v1/members/east/promote", good, "", "{}", 404, "no such agent API call"},
		{"encoded slash in the cluster", "PUT", "/apis/v1/members/east%2Fwest/report", good, "", report(nil), 404, ""},
		{"uppercase cluster", "PUT", "/apis/v1/members/EAST/report", good, "", report(nil), 404, "not a cluster name"},
		{"dot-dot in a document path", "GET", "/clusters/east/../west/openid/v1/jwks", "", "", "", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tc.method, e.url+tc.path, strings.NewReader(tc.body))
			req.URL.RawPath = tc.path // send the path exactly as written
			req.Header.Set("Content-Type", "application/json")
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := e.https.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var e federation.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
				t.Fatalf("error body is not {\"error\": ...}: %q", body)
			}
			if !strings.Contains(e.Error, tc.errContains) {
				t.Errorf("error %q does not say %q", e.Error, tc.errContains)
			}
		})
	}

	after := snapshot()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed (resourceVersion %s -> %s)", k, v, after[k])
		}
	}
	if len(after) != len(before) {
		t.Errorf("objects appeared or vanished: %v -> %v", before, after)
	}
}

// issueLeafPEM signs a leaf with the pool, to offer a non-CA certificate.
func issueLeafPEM(t *testing.T, pool *signers.Pool) string {
	t.Helper()
	tmpl, err := signers.SPIFFELeaf(spiffeid.RequireTrustDomainFromString("east.example"), "ns", "sa")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := signers.Sign(signers.Env{}, pool, "https://x.invalid/clusters/east", tmpl, pool.CAs[0].Key.Public(), 3600)
	if err != nil {
		t.Fatal(err)
	}
	return string(iss.ChainPEM())
}
