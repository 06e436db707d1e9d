package members

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/oidcbundle"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Reports rewrite lastReportTime and Ready every interval; only changes to
// what is served may rebuild the documents.
func TestServedChanged(t *testing.T) {
	base := &hubv1.MemberCluster{
		Spec: hubv1.MemberClusterSpec{Issuer: "https://hub.example/clusters/east", TrustDomain: "east.example"},
		Status: hubv1.MemberClusterStatus{JWKS: `{"keys":[]}`, AnchorsSequence: 1,
			Anchors: []hubv1.SignerAnchors{{Signer: "anchorage.dev/spiffe", PEM: "a"}}},
	}
	meta.SetStatusCondition(&base.Status.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: "Joined"})
	for _, tc := range []struct {
		name   string
		change func(*hubv1.MemberCluster)
		want   bool
	}{
		{"a report: lastReportTime and agent version", func(m *hubv1.MemberCluster) {
			m.Status.LastReportTime = &metav1.Time{Time: time.Now()}
			m.Status.AgentVersion = "v2"
		}, false},
		{"Ready flips", func(m *hubv1.MemberCluster) {
			meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "ReportStale"})
		}, false},
		{"anchors", func(m *hubv1.MemberCluster) { m.Status.Anchors[0].PEM = "b"; m.Status.AnchorsSequence = 2 }, true},
		{"JWKS rotated", func(m *hubv1.MemberCluster) { m.Status.JWKS = `{"keys":[{}]}` }, true},
		{"joined", func(m *hubv1.MemberCluster) { m.Status.Conditions = nil }, true},
		{"spec", func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*"} }, true},
	} {
		cur := base.DeepCopy()
		tc.change(cur)
		if got := servedChanged(base, cur); got != tc.want {
			t.Errorf("%s: servedChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// shuffled lists MemberClusters in a random order, as an informer may.
type shuffled struct {
	client.Reader
	rnd *rand.Rand
}

func (r shuffled) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := r.Reader.List(ctx, list, opts...); err != nil {
		return err
	}
	if mcs, ok := list.(*hubv1.MemberClusterList); ok {
		r.rnd.Shuffle(len(mcs.Items), func(i, j int) { mcs.Items[i], mcs.Items[j] = mcs.Items[j], mcs.Items[i] })
	}
	return nil
}

// reporting is a joined member of td that reported cas as its SPIFFE anchors.
func reporting(name, td string, seq int64, cas ...*signers.CA) *hubv1.MemberCluster {
	mc := joinedMember(name, td)
	var certs []*x509.Certificate
	for _, ca := range cas {
		certs = append(certs, ca.Certificate)
	}
	mc.Status.Anchors = []hubv1.SignerAnchors{{Signer: signers.SPIFFESignerName, PEM: string(signers.EncodeCertificatesPEM(certs))}}
	mc.Status.AnchorsSequence = seq
	return mc
}

// get serves path from a fresh replica's documents, built from c listed in
// the order rnd gives.
func get(t *testing.T, c client.Client, rnd *rand.Rand, path string) *httptest.ResponseRecorder {
	t.Helper()
	store, err := oidcbundle.NewStore(oidcbundle.Options{HubURL: "https://hub.example"})
	if err != nil {
		t.Fatal(err)
	}
	d := &Documents{Reader: shuffled{c, rnd}, Store: store, Ready: make(chan struct{})}
	if _, err := d.Reconcile(context.Background(), reconcile.Request{}); err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	store.Routes(r)
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// The bundle of a trust domain spanning several members is the same
// document (body and ETag) whatever order the informer lists them in.
func TestTrustDomainBundleIsStable(t *testing.T) {
	const td = "shared.example"
	var objs []client.Object
	for i, name := range []string{"a", "b", "c", "d", "e"} {
		objs = append(objs, reporting(name, td, int64(i+1), newCA(t, name, td), newCA(t, name+"-next", td)))
	}
	c := fake.NewClientBuilder().WithScheme(hubScheme(t)).WithObjects(objs...).Build()
	first := get(t, c, rand.New(rand.NewPCG(1, 0)), "/trust-domains/"+td+"/bundle")
	if first.Code != http.StatusOK || first.Header().Get("ETag") == "" {
		t.Fatalf("status %d, ETag %q: %s", first.Code, first.Header().Get("ETag"), first.Body)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(td), first.Body.Bytes())
	if err != nil || len(b.X509Authorities()) != 10 {
		t.Fatalf("bundle of %d anchors, %v; want 10", len(b.X509Authorities()), err)
	}
	for seed := uint64(2); seed < 12; seed++ {
		got := get(t, c, rand.New(rand.NewPCG(seed, 0)), "/trust-domains/"+td+"/bundle")
		if got.Body.String() != first.Body.String() || got.Header().Get("ETag") != first.Header().Get("ETag") {
			t.Fatalf("listing order %d changes the document:\n%s\nETag %s\nwant\n%s\nETag %s", seed, got.Body, got.Header().Get("ETag"), first.Body, first.Header().Get("ETag"))
		}
	}
}

// plainCA is a CA certificate without a URI SAN (as many SPIRE upstream
// CAs): nothing in it says which trust domain it serves.
func plainCA(t *testing.T) *signers.CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &signers.CA{Certificate: cert}
}

// A bundle stored for another trust domain (before a rename) is not served
// as this one's.
func TestForeignBundleIsNotServed(t *testing.T) {
	renamed := fetched(t, "renamed", "old.example", plainCA(t))
	renamed.Spec.TrustDomain = "renamed.example"
	c := fake.NewClientBuilder().WithScheme(hubScheme(t)).WithObjects(renamed, fetched(t, "good", "good.example", newCA(t, "g", "good.example"))).Build()
	rnd := rand.New(rand.NewPCG(1, 0))
	if got := get(t, c, rnd, "/trust-domains/renamed.example/bundle"); got.Code != http.StatusNotFound {
		t.Errorf("renamed.example: status %d, want 404: %s", got.Code, got.Body)
	}
	if got := get(t, c, rnd, "/trust-domains/good.example/bundle"); got.Code != http.StatusOK {
		t.Errorf("good.example: status %d, want 200: %s", got.Code, got.Body)
	}
}
