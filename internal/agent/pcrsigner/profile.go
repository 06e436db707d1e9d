package pcrsigner

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Profile decides what a signer's certificate says.
type Profile interface {
	// Template returns the certificate template for req, whose pod has
	// been checked. It returns a *Denial when the request can never
	// succeed, a *Pending when it must wait for something in the cluster,
	// and any other error for a transient failure.
	Template(ctx context.Context, req *certsv1.PodCertificateRequest, pod *corev1.Pod) (*x509.Certificate, error)
	// UserAnnotations lists the unverifiedUserAnnotations keys the signer
	// understands; requests with other keys are denied, as the API asks.
	UserAnnotations() []string
}

// Watcher is implemented by profiles whose answer depends on other
// objects: they add watches that re-queue the affected requests. requests
// lists the signer's PodCertificateRequests.
type Watcher interface {
	Watch(b *builder.Builder, requests client.Reader) *builder.Builder
}

// Denial is a decision that the request can never succeed.
type Denial struct{ Reason, Message string }

func (d *Denial) Error() string { return fmt.Sprintf("denied (%s): %s", d.Reason, d.Message) }

// Pending means the request must wait for the cluster to change (a
// Service to appear, say). It becomes Failed after the controller's
// pending timeout.
type Pending struct {
	Reason, Message string
	// RetryAfter is a fallback re-check; watches normally re-queue sooner.
	RetryAfter time.Duration
}

func (p *Pending) Error() string { return fmt.Sprintf("pending (%s): %s", p.Reason, p.Message) }

// Terminal reports whether req already has Issued, Denied or Failed: its
// status is then frozen by the apiserver.
func Terminal(req *certsv1.PodCertificateRequest) bool {
	for _, c := range req.Status.Conditions {
		switch c.Type {
		case certsv1.PodCertificateRequestConditionTypeIssued, certsv1.PodCertificateRequestConditionTypeDenied, certsv1.PodCertificateRequestConditionTypeFailed:
			return true
		}
	}
	return false
}
