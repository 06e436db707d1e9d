package app_test

import (
	"crypto"
	"encoding/hex"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	certsv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Every key type the API allows is issued an X509-SVID that go-spiffe
// verifies against the local bundle, with exactly the profile and
// lifetimes of DESIGN.md, and the apiserver accepted every status.
func TestSPIFFEEveryKeyType(t *testing.T) {
	e := newEnv(t)
	a := e.startAgent("agent", nil)
	ns := e.namespace("shop")

	pods := map[signers.KeyType]*kubeletsim.Pod{}
	for _, kt := range signers.AllKeyTypes() {
		pods[kt] = e.runPod(pod(ns, "p-"+strings.ToLower(string(kt)), signers.SPIFFESignerName, string(kt), nil, nil))
	}

	bundleCTB := e.localBundle(signers.SPIFFESignerName)
	wantLabels := map[string]string{
		"k8s.spiffe.io/canarying":             "live",
		"k8s.spiffe.io/workload-trust-domain": testTrustDomain,
		"k8s.spiffe.io/peer-trust-domain":     testTrustDomain,
	}
	if !maps.Equal(bundleCTB.Labels, wantLabels) || bundleCTB.Spec.SignerName != signers.SPIFFESignerName {
		t.Errorf("local SPIFFE bundle labels %v signer %q", bundleCTB.Labels, bundleCTB.Spec.SignerName)
	}
	anchors, err := signers.ParseCertificatesPEM([]byte(bundleCTB.Spec.TrustBundle))
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(testTrustDomain)
	bundle := x509bundle.FromX509Authorities(td, anchors)

	for kt, p := range pods {
		t.Run(string(kt), func(t *testing.T) {
			e.waitIssued(p)
			req := e.latest(p)
			key, chain := credential(t, p)
			leaf := chain[0]

			if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
				t.Error("projected key does not match the leaf")
			}
			if got, _ := signers.KeyTypeOf(leaf.PublicKey); got != kt {
				t.Errorf("leaf key type %s", got)
			}
			id, _, err := x509svid.Verify(chain, bundle)
			if err != nil {
				t.Fatalf("go-spiffe rejects the SVID: %v", err)
			}
			if want := "spiffe://east.example/ns/shop/sa/workload"; id.String() != want || len(leaf.URIs) != 1 {
				t.Errorf("SPIFFE ID %s (%d URI SANs), want exactly %s", id, len(leaf.URIs), want)
			}
			if len(leaf.DNSNames) != 0 || len(leaf.Subject.Names) != 0 || leaf.IsCA {
				t.Errorf("unexpected DNS SANs %v / subject %q / CA", leaf.DNSNames, leaf.Subject)
			}
			checkLifetimes(t, req, leaf.NotBefore, leaf.NotAfter, 24*time.Hour)

			if got, err := signers.IssuerFromCertificate(leaf); err != nil || got != testIssuer {
				t.Errorf("IssuerFromCertificate = %q, %v", got, err)
			}
			wantAIA := testIssuer + "/.well-known/anchorage/ca/spiffe/" + hex.EncodeToString(anchors[0].SubjectKeyId) + ".der"
			if len(leaf.IssuingCertificateURL) != 1 || leaf.IssuingCertificateURL[0] != wantAIA {
				t.Errorf("AIA %v, want %s", leaf.IssuingCertificateURL, wantAIA)
			}
			if c := condition(req, certsv1.PodCertificateRequestConditionTypeIssued); c == nil || c.Reason != "Issued" {
				t.Errorf("Issued condition %+v", c)
			}
		})
	}
	if got := metricSum(t, a, "anchorage_signer_issued_total"); got != float64(len(pods)) {
		t.Errorf("anchorage_signer_issued_total = %v, want %d", got, len(pods))
	}
}

// checkLifetimes: lifetime exact, notBefore backdated 2 minutes from the
// signing moment, refresh at half, status equal to the certificate.
func checkLifetimes(t *testing.T, req *certsv1.PodCertificateRequest, nb, na time.Time, lifetime time.Duration) {
	t.Helper()
	s := req.Status
	if s.NotBefore == nil || s.NotAfter == nil || s.BeginRefreshAt == nil {
		t.Fatal("status times missing")
	}
	if !s.NotBefore.Time.Equal(nb) || !s.NotAfter.Time.Equal(na) {
		t.Errorf("status times %v–%v differ from the certificate's %v–%v", s.NotBefore, s.NotAfter, nb, na)
	}
	if got := na.Sub(nb); got != lifetime {
		t.Errorf("lifetime %v, want %v", got, lifetime)
	}
	if got := s.BeginRefreshAt.Sub(nb); got != lifetime/2 {
		t.Errorf("beginRefreshAt is notBefore+%v, want +%v", got, lifetime/2)
	}
	// Signed after the request was created and before we looked: the
	// backdate is exactly 2 minutes from that moment (second precision).
	created := req.CreationTimestamp.Time
	if nb.Before(created.Add(-2*time.Minute-time.Second)) || nb.After(time.Now().Add(-2*time.Minute)) {
		t.Errorf("notBefore %v is not 2 minutes before signing (request created %v)", nb, created)
	}
}

func condition(req *certsv1.PodCertificateRequest, typ string) *metav1.Condition {
	for i := range req.Status.Conditions {
		if req.Status.Conditions[i].Type == typ {
			return &req.Status.Conditions[i]
		}
	}
	return nil
}

// localBundle waits for and returns one of the agent's local bundles.
func (e *env) localBundle(signer string) *certsv1.ClusterTrustBundle {
	e.t.Helper()
	var ctb certsv1.ClusterTrustBundle
	eventually(e.t, 30*time.Second, "local trust bundle "+trustbundles.LocalName(signer), func() (bool, error) {
		err := e.c.Get(e.ctx, client.ObjectKey{Name: trustbundles.LocalName(signer)}, &ctb)
		return err == nil, client.IgnoreNotFound(err)
	})
	return &ctb
}
