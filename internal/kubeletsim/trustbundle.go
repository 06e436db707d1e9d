package kubeletsim

import (
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxLabelSelectorLength is the kubelet's limit on a projection's selector.
const maxLabelSelectorLength = 100 * 1024

// trustAnchors renders a clusterTrustBundle source like the kubelet's
// ClusterTrustBundle manager: by name, one bundle; by signerName, every bundle
// of that signer matching labelSelector, where a nil selector matches nothing
// and an empty one everything. Certificates are deduplicated across bundles
// and re-encoded as header-less CERTIFICATE blocks. Nothing found is an error
// unless the source is optional, which yields an empty file.
//
// The kubelet shuffles the anchors (a new order whenever its 5-minute cache is
// rebuilt); here they are sorted by DER so that an unchanged set never
// rewrites the file. Consumers must not depend on the order either way.
func (s *Sim) trustAnchors(src *corev1.ClusterTrustBundleProjection) ([]byte, error) {
	optional := src.Optional != nil && *src.Optional
	var bundles []*certsv1.ClusterTrustBundle
	switch {
	case src.Name != nil:
		ctb, err := s.ctbLister.Get(*src.Name)
		if apierrors.IsNotFound(err) && optional {
			return []byte{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("getting ClusterTrustBundle %q: %w", *src.Name, err)
		}
		bundles = append(bundles, ctb)
	case src.SignerName != nil:
		sel, err := metav1.LabelSelectorAsSelector(src.LabelSelector)
		if err != nil {
			return nil, fmt.Errorf("parsing label selector: %w", err)
		}
		if n := len(sel.String()); n > maxLabelSelectorLength {
			return nil, fmt.Errorf("label selector length (%d) is larger than %d", n, maxLabelSelectorLength)
		}
		all, err := s.ctbLister.List(sel)
		if err != nil {
			return nil, fmt.Errorf("listing ClusterTrustBundles matching %v: %w", sel, err)
		}
		for _, ctb := range all {
			if ctb.Spec.SignerName == *src.SignerName {
				bundles = append(bundles, ctb)
			}
		}
		if len(bundles) == 0 {
			if optional {
				return []byte{}, nil
			}
			return nil, fmt.Errorf("combination of signerName %q and labelSelector %q matched zero ClusterTrustBundles", *src.SignerName, sel)
		}
	default:
		return nil, errors.New("ClusterTrustBundle projection requires either name or signerName to be set")
	}

	seen := map[string]bool{}
	var ders []string
	for _, ctb := range bundles {
		rest := []byte(ctb.Spec.TrustBundle)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if der := string(b.Bytes); !seen[der] {
				seen[der] = true
				ders = append(ders, der)
			}
		}
	}
	slices.Sort(ders)
	var out []byte
	for _, der := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte(der)})...)
	}
	return out, nil
}
