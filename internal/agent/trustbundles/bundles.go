package trustbundles

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
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
	// MaxBundleBytes is the apiserver's limit on a ClusterTrustBundle's
	// PEM (DESIGN.md): a bigger bundle can never be applied.
	MaxBundleBytes = 1 << 20
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

// Set is what one owner wants among the bundles it owns.
type Set struct {
	Bundles []Bundle
	// Keep names owned bundles to leave as they are, neither written nor
	// deleted (the hub still wants the trust domain but has no bundle of
	// it to vouch for).
	Keep []string
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

// Apply makes the cluster hold exactly want.Bundles among the bundles it
// owns for signerNames: it applies what differs and deletes owned bundles
// that are neither desired nor kept. A bundle that is already right is not
// written. One failed write does not stop the others (a rejected bundle
// must not hold back the rest): the failures are returned joined.
func (a *Applier) Apply(ctx context.Context, signerNames []string, want Set) (Result, error) {
	var res Result
	todo := map[string]Bundle{}
	for _, b := range want.Bundles {
		todo[b.Name] = b
	}
	// Bundles are few: list them all rather than needing a signerName
	// index in every cache this runs against.
	var list certsv1.ClusterTrustBundleList
	if err := a.Client.List(ctx, &list); err != nil {
		return res, fmt.Errorf("listing ClusterTrustBundles: %w", err)
	}
	var errs []error
	for i := range list.Items {
		have := &list.Items[i]
		if !slices.Contains(signerNames, have.Spec.SignerName) || slices.Contains(want.Keep, have.Name) {
			continue
		}
		if b, ok := todo[have.Name]; ok {
			if upToDate(have, b) {
				delete(todo, have.Name)
			}
			continue
		}
		if !a.Owns(have) {
			continue
		}
		if err := a.Client.Delete(ctx, have); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting stale ClusterTrustBundle %s: %w", have.Name, err))
			continue
		}
		res.Deleted++
	}
	for _, b := range want.Bundles {
		if _, ok := todo[b.Name]; !ok || slices.Contains(want.Keep, b.Name) {
			continue
		}
		ac := certsv1ac.ClusterTrustBundle(b.Name).
			WithLabels(b.Labels).
			WithSpec(certsv1ac.ClusterTrustBundleSpec().WithSignerName(b.Signer).WithTrustBundle(string(signers.EncodeCertificatesPEM(b.Anchors))))
		if err := a.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			errs = append(errs, fmt.Errorf("applying ClusterTrustBundle %s: %w", b.Name, err))
			continue
		}
		res.Applied++
	}
	return res, errors.Join(errs...)
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
