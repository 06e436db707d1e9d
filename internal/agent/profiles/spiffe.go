package profiles

import (
	"context"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/anchorage-dev/anchorage/internal/agent/pcrsigner"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// SPIFFE issues spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// The identity comes only from fields the kubelet and NodeRestriction
// vouch for; the request's CSR contents are ignored.
type SPIFFE struct {
	TrustDomain spiffeid.TrustDomain
}

var _ pcrsigner.Profile = (*SPIFFE)(nil)

// Template implements pcrsigner.Profile.
func (p *SPIFFE) Template(_ context.Context, req *certsv1.PodCertificateRequest, _ *corev1.Pod) (*x509.Certificate, error) {
	tmpl, err := signers.SPIFFELeaf(p.TrustDomain, req.Namespace, req.Spec.ServiceAccountName)
	if err != nil {
		// Namespace and service account names are validated by the
		// apiserver, so this cannot change on a retry.
		return nil, &pcrsigner.Denial{Reason: "InvalidSPIFFEID", Message: err.Error()}
	}
	return tmpl, nil
}

// UserAnnotations implements pcrsigner.Profile: the SPIFFE signer takes none.
func (p *SPIFFE) UserAnnotations() []string { return nil }
