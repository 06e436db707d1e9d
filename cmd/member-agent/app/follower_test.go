package app_test

import (
	"maps"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// The local publisher deletes only the bundles it owns (the ...:local
// ones): a federated bundle whose hub label was removed, or an operator's
// own bundle of our signer, is not its to delete.
func TestLocalDeletesOnlyItsOwnBundles(t *testing.T) {
	e := newEnv(t)
	e.startAgent("agent", nil)
	anchorPEM := e.localBundle(signers.SPIFFESignerName).Spec.TrustBundle

	fedLabels := map[string]string{
		federation.LabelCanarying: federation.CanaryingLive, federation.LabelWorkloadTrustDomain: testTrustDomain,
		federation.LabelPeerTrustDomain: "west.example", federation.LabelSource: federation.SourceHub,
	}
	federated := &certsv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: federation.TrustDomainBundleName("west.example"), Labels: maps.Clone(fedLabels)},
		Spec: certsv1.ClusterTrustBundleSpec{SignerName: signers.SPIFFESignerName, TrustBundle: anchorPEM}}
	operators := &certsv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: "anchorage.dev:spiffe:partner"},
		Spec: certsv1.ClusterTrustBundleSpec{SignerName: signers.SPIFFESignerName, TrustBundle: anchorPEM}}
	for _, o := range []client.Object{federated, operators} {
		if err := e.c.Create(e.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	delete(federated.Labels, federation.LabelSource)
	if err := e.c.Update(e.ctx, federated); err != nil {
		t.Fatal(err)
	}

	// A label removed by hand from a local bundle comes back: the
	// publisher has run since, on a cache holding both bundles above.
	edited := e.localBundle(signers.ServiceDNSSignerName)
	delete(edited.Labels, trustbundles.LabelServiceDNSScope)
	if err := e.c.Update(e.ctx, edited); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "local label restored", func() (bool, error) {
		return e.localBundle(signers.ServiceDNSSignerName).Labels[trustbundles.LabelServiceDNSScope] == trustbundles.ScopeCluster, nil
	})
	time.Sleep(500 * time.Millisecond) // room for a wrong delete to land
	for _, o := range []client.Object{federated, operators} {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(o), &certsv1.ClusterTrustBundle{}); err != nil {
			t.Errorf("%s: %v (the local publisher deleted a bundle it does not own)", o.GetName(), err)
		}
	}
}
