package hubclient

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload/workloadtest"
)

// A hub answer is checked before anything is applied: a bundle the hub may
// not push, or content that is not CA certificates, refuses the whole set
// (and so keeps every current bundle).
func TestDesiredRefusesBadAnswers(t *testing.T) {
	west := workloadtest.NewSPIFFECA(t, spiffeid.RequireTrustDomainFromString("west.example"), "west")
	caPEM := string(west.AnchorPEM())
	leaf := west.Issue(t, workloadtest.SPIFFELeaf(t, spiffeid.RequireTrustDomainFromString("west.example"), "ns", "sa"))
	peer := func(name, td, pem string) federation.Bundle {
		return federation.Bundle{Name: name, SignerName: signers.SPIFFESignerName, TrustBundle: pem,
			Labels: map[string]string{federation.LabelPeerTrustDomain: td, federation.LabelSource: federation.SourceHub}}
	}
	good := peer(federation.TrustDomainBundleName("west.example"), "west.example", caPEM)
	clusterset := federation.Bundle{Name: federation.ClustersetBundleName(), SignerName: signers.ServiceDNSSignerName, TrustBundle: caPEM,
		Labels: map[string]string{federation.LabelSource: federation.SourceHub}}

	got, err := Desired(&federation.BundleSet{Sequence: 3, Bundles: []federation.Bundle{good, clusterset}})
	if err != nil || len(got) != 2 || len(got[0].Anchors) != 1 {
		t.Fatalf("a good answer: %v, %d bundles", err, len(got))
	}

	noSource := good
	noSource.Labels = map[string]string{federation.LabelPeerTrustDomain: "west.example"}
	for _, tc := range []struct {
		name   string
		bundle federation.Bundle
		want   string
	}{
		{"our local bundle", peer(federation.LocalBundleName(signers.SPIFFESignerName), "west.example", caPEM), "not one the hub may push"},
		{"a name that is not its peer's", peer(federation.TrustDomainBundleName("evil.example"), "west.example", caPEM), "not one the hub may push"},
		{"another signer", federation.Bundle{Name: "example.com:signer:x", SignerName: "example.com/signer", TrustBundle: caPEM, Labels: good.Labels}, "not one the hub may push"},
		{"without the hub's source label", noSource, "not one the hub may push"},
		{"a leaf, not a CA", peer(good.Name, "west.example", string(leaf.ChainPEM)), "not a CA certificate"},
		{"garbage PEM", peer(good.Name, "west.example", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"), "PEM"},
		{"empty", peer(good.Name, "west.example", ""), "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Desired(&federation.BundleSet{Sequence: 4, Bundles: []federation.Bundle{clusterset, tc.bundle}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, err := Desired(&federation.BundleSet{Bundles: []federation.Bundle{good, good}}); err == nil {
		t.Error("the same bundle twice accepted")
	}
}
