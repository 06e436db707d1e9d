package app_test

import (
	"maps"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// The local bundles have the exact names and labels of DESIGN.md, follow
// the CA pool, are not rewritten when nothing changed, and other bundles
// of our signers (an operator's, the hub's) are left alone: the local
// publisher deletes only names it owns.
func TestLocalTrustBundles(t *testing.T) {
	e := newEnv(t)
	e.startAgent("agent", nil)

	spiffe := e.localBundle(signers.SPIFFESignerName)
	dns := e.localBundle(signers.ServiceDNSSignerName)
	if want := map[string]string{"service-dns.anchorage.dev/scope": "cluster"}; !maps.Equal(dns.Labels, want) || dns.Spec.SignerName != signers.ServiceDNSSignerName {
		t.Errorf("service-dns bundle labels %v signer %q", dns.Labels, dns.Spec.SignerName)
	}
	pool := e.pool(signers.SPIFFESignerName)
	if got := string(signers.EncodeCertificatesPEM(pool.Anchors(time.Now()))); spiffe.Spec.TrustBundle != got {
		t.Error("SPIFFE bundle differs from the pool's anchors")
	}

	// Someone else's bundle for our signer, a federated one from the hub,
	// and a federated one whose hub label someone removed.
	anchorPEM := spiffe.Spec.TrustBundle
	other := &certsv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: "anchorage.dev:spiffe:partner"},
		Spec: certsv1.ClusterTrustBundleSpec{SignerName: signers.SPIFFESignerName, TrustBundle: anchorPEM}}
	fromHub := &certsv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: "anchorage.dev:spiffe:td-west.example", Labels: map[string]string{trustbundles.LabelSource: trustbundles.SourceHub}},
		Spec: certsv1.ClusterTrustBundleSpec{SignerName: signers.SPIFFESignerName, TrustBundle: anchorPEM}}
	unlabelled := &certsv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Name: "anchorage.dev:spiffe:td-north.example"},
		Spec: certsv1.ClusterTrustBundleSpec{SignerName: signers.SPIFFESignerName, TrustBundle: anchorPEM}}
	others := []client.Object{other, fromHub, unlabelled}
	for _, o := range others {
		if err := e.c.Create(e.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The creations re-run the publisher; a label edit of our own bundle
	// after them shows it has seen them all (one work queue, one key), and
	// since a reconcile deletes before it applies, any wrong delete has
	// landed once the label is back.
	edited := e.localBundle(signers.ServiceDNSSignerName)
	delete(edited.Labels, trustbundles.LabelServiceDNSScope)
	if err := e.c.Update(e.ctx, edited); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "label restored", func() (bool, error) {
		return e.localBundle(signers.ServiceDNSSignerName).Labels[trustbundles.LabelServiceDNSScope] == trustbundles.ScopeCluster, nil
	})
	for _, o := range others {
		var got certsv1.ClusterTrustBundle
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(o), &got); err != nil || got.ResourceVersion != o.GetResourceVersion() {
			t.Errorf("%s was touched by the local publisher: %v", o.GetName(), err)
		}
	}
	// Nothing of ours changed, so nothing was written.
	if now := e.localBundle(signers.SPIFFESignerName); now.ResourceVersion != spiffe.ResourceVersion {
		t.Errorf("local bundle rewritten without a change (resourceVersion %s -> %s)", spiffe.ResourceVersion, now.ResourceVersion)
	}

	// Rotation starts: a next CA in the pool is published at once, after
	// the active one.
	next, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile("east", testTrustDomain, testIssuer), nil)
	if err != nil {
		t.Fatal(err)
	}
	next.State = signers.StateNext
	pool.CAs = append(pool.CAs, next)
	e.savePool(pool)
	eventually(t, 20*time.Second, "next CA published", func() (bool, error) {
		certs, err := signers.ParseCertificatesPEM([]byte(e.localBundle(signers.SPIFFESignerName).Spec.TrustBundle))
		return err == nil && len(certs) == 2 && certs[1].Equal(next.Certificate), err
	})
}

func (e *env) pool(signer string) *signers.Pool {
	e.t.Helper()
	var s corev1.Secret
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: agentNamespace, Name: capool.SecretName(signer)}, &s); err != nil {
		e.t.Fatal(err)
	}
	p, err := signers.UnmarshalPool(s.Data[capool.PoolKey])
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) savePool(p *signers.Pool) {
	e.t.Helper()
	var s corev1.Secret
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: agentNamespace, Name: capool.SecretName(p.Signer)}, &s); err != nil {
		e.t.Fatal(err)
	}
	data, err := p.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	s.Data[capool.PoolKey] = data
	if err := e.c.Update(e.ctx, &s); err != nil {
		e.t.Fatal(err)
	}
}
