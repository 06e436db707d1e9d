package trustbundles

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"

	certsv1 "k8s.io/api/certificates/v1"
	certsv1ac "k8s.io/client-go/applyconfigurations/certificates/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Labels and names are the contract of pkg/federation (DESIGN.md,
// "ClusterTrustBundles written by the agent").
const (
	LabelCanarying           = federation.LabelCanarying
	LabelWorkloadTrustDomain = federation.LabelWorkloadTrustDomain
	LabelPeerTrustDomain     = federation.LabelPeerTrustDomain
	LabelServiceDNSScope     = federation.LabelServiceDNSScope
	LabelSource              = federation.LabelSource
	CanaryingLive            = federation.CanaryingLive
	ScopeCluster             = federation.ScopeCluster
	SourceHub                = federation.SourceHub
	FieldManager             = "anchorage-member-agent"
)

// LocalName is the bundle of this cluster's own anchors of signer.
func LocalName(signer string) string { return federation.LocalBundleName(signer) }

// Bundle is one desired ClusterTrustBundle.
type Bundle struct {
	Name    string
	Signer  string
	Labels  map[string]string
	Anchors []*x509.Certificate
}

// LocalSPIFFE is this cluster's SPIFFE bundle for trust domain td.
func LocalSPIFFE(td string, anchors []*x509.Certificate) Bundle {
	return Bundle{
		Name:   LocalName(signers.SPIFFESignerName),
		Signer: signers.SPIFFESignerName,
		Labels: map[string]string{
			LabelCanarying: CanaryingLive, LabelWorkloadTrustDomain: td, LabelPeerTrustDomain: td,
		},
		Anchors: anchors,
	}
}

// LocalServiceDNS is this cluster's service-dns bundle.
func LocalServiceDNS(anchors []*x509.Certificate) Bundle {
	return Bundle{
		Name:    LocalName(signers.ServiceDNSSignerName),
		Signer:  signers.ServiceDNSSignerName,
		Labels:  map[string]string{LabelServiceDNSScope: ScopeCluster},
		Anchors: anchors,
	}
}

// Applier converges the bundles of one owner (the local publisher, or the
// federation from the hub) without touching the other's.
type Applier struct {
	// Client reads bundles (from a cache) and writes them.
	Client client.Client
	// Owns says which existing bundles this applier may delete.
	Owns func(*certsv1.ClusterTrustBundle) bool
}

// Result counts what Apply did.
type Result struct{ Applied, Deleted int }

// Apply makes the cluster hold exactly desired among the bundles it owns
// for signerNames: it applies what differs and deletes owned bundles that
// are no longer desired. A bundle that is already right is not written.
func (a *Applier) Apply(ctx context.Context, signerNames []string, desired []Bundle) (Result, error) {
	var res Result
	want := map[string]Bundle{}
	for _, b := range desired {
		want[b.Name] = b
	}
	// Bundles are few: list them all rather than needing a signerName
	// index in every cache this runs against.
	var list certsv1.ClusterTrustBundleList
	if err := a.Client.List(ctx, &list); err != nil {
		return res, fmt.Errorf("listing ClusterTrustBundles: %w", err)
	}
	for i := range list.Items {
		have := &list.Items[i]
		if !slices.Contains(signerNames, have.Spec.SignerName) {
			continue
		}
		if b, ok := want[have.Name]; ok {
			if upToDate(have, b) {
				delete(want, have.Name)
			}
			continue
		}
		if a.Owns(have) {
			if err := a.Client.Delete(ctx, have); client.IgnoreNotFound(err) != nil {
				return res, fmt.Errorf("deleting stale ClusterTrustBundle %s: %w", have.Name, err)
			}
			res.Deleted++
		}
	}
	for _, b := range desired {
		if _, todo := want[b.Name]; !todo {
			continue
		}
		ac := certsv1ac.ClusterTrustBundle(b.Name).
			WithLabels(b.Labels).
			WithSpec(certsv1ac.ClusterTrustBundleSpec().WithSignerName(b.Signer).WithTrustBundle(string(signers.EncodeCertificatesPEM(b.Anchors))))
		if err := a.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return res, fmt.Errorf("applying ClusterTrustBundle %s: %w", b.Name, err)
		}
		res.Applied++
	}
	return res, nil
}

func upToDate(have *certsv1.ClusterTrustBundle, b Bundle) bool {
	if have.Spec.SignerName != b.Signer || !bytes.Equal([]byte(have.Spec.TrustBundle), signers.EncodeCertificatesPEM(b.Anchors)) {
		return false
	}
	// Others may add labels; ours must be there with our values.
	sub := maps.Clone(have.Labels)
	maps.DeleteFunc(sub, func(k, _ string) bool { _, ok := b.Labels[k]; return !ok })
	return maps.Equal(sub, b.Labels)
}
