package hubclient

import (
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
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

	kept := federation.TrustDomainBundleName("spire_partner.example")
	got, _, err := Desired(&federation.BundleSet{Sequence: 3, Bundles: []federation.Bundle{good, clusterset}, Keep: []string{kept}})
	if err != nil || len(got.Bundles) != 2 || len(got.Bundles[0].Anchors) != 1 || !slices.Equal(got.Keep, []string{kept}) {
		t.Fatalf("a good answer: %v, %d bundles, keep %v", err, len(got.Bundles), got.Keep)
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
			_, _, err := Desired(&federation.BundleSet{Sequence: 4, Bundles: []federation.Bundle{clusterset, tc.bundle}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, _, err := Desired(&federation.BundleSet{Bundles: []federation.Bundle{good, good}}); err == nil {
		t.Error("the same bundle twice accepted")
	}

	// A bundle the apiserver can never take (over 1 MiB of PEM).
	var many []*x509.Certificate
	for size := 0; size <= trustbundles.MaxBundleBytes; {
		ca := workloadtest.NewSPIFFECA(t, spiffeid.RequireTrustDomainFromString("west.example"), "west").Pool.CAs[0].Anchor()
		many = append(many, ca)
		size += len(signers.EncodeCertificatesPEM([]*x509.Certificate{ca}))
	}
	huge := peer(good.Name, "west.example", string(signers.EncodeCertificatesPEM(many)))
	// It is kept as the cluster holds it, and the rest still applies.
	want, tooBig, err := Desired(&federation.BundleSet{Bundles: []federation.Bundle{clusterset, huge}})
	if err != nil || !slices.Equal(tooBig, []string{huge.Name}) || !slices.Equal(want.Keep, []string{huge.Name}) ||
		len(want.Bundles) != 1 || want.Bundles[0].Name != clusterset.Name {
		t.Errorf("a bundle over 1 MiB: too big %v, keep %v, %d bundles, error %v", tooBig, want.Keep, len(want.Bundles), err)
	}

	// Keep names only federated trust-domain bundles, each once, none also
	// sent as a bundle.
	for _, tc := range []struct {
		name string
		keep []string
		want string
	}{
		{"our local bundle", []string{federation.LocalBundleName(signers.SPIFFESignerName)}, "not a federated trust domain's"},
		{"the clusterset bundle", []string{federation.ClustersetBundleName()}, "not a federated trust domain's"},
		{"another signer's name", []string{"example.com:signer:td-west.example"}, "not a federated trust domain's"},
		{"no trust domain", []string{federation.TrustDomainBundleName("")}, "not a federated trust domain's"},
		{"not a trust domain", []string{federation.TrustDomainBundleName("x") + "/../y"}, "not a federated trust domain's"},
		{"upper case", []string{federation.TrustDomainBundleName("West.example")}, "not a federated trust domain's"},
		{"twice", []string{kept, kept}, "both kept and listed before"},
		{"also a bundle", []string{good.Name}, "both kept and listed before"},
	} {
		t.Run("keep "+tc.name, func(t *testing.T) {
			_, _, err := Desired(&federation.BundleSet{Sequence: 4, Bundles: []federation.Bundle{clusterset, good}, Keep: tc.keep})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
