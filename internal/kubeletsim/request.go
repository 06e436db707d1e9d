package kubeletsim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// KeyTypes returns the key types a podCertificate projection may ask for, in
// the API's order.
func KeyTypes() []string {
	return []string{"RSA3072", "RSA4096", "ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519"}
}

// NewKeyAndCSR generates a fresh private key of keyType and the stub PKCS#10
// request the kubelet puts in spec.stubPKCS10Request: an empty template signed
// with the key, which is the proof of possession the apiserver checks
// (generateKeyAndProof in the kubelet's podcertificatemanager.go).
func NewKeyAndCSR(keyType string) (crypto.Signer, []byte, error) {
	var (
		key crypto.Signer
		err error
	)
	switch keyType {
	case "RSA3072":
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	case "RSA4096":
		key, err = rsa.GenerateKey(rand.Reader, 4096)
	case "ECDSAP256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ECDSAP384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ECDSAP521":
		key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ED25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, nil, fmt.Errorf("unknown key type %q (want one of %v)", keyType, KeyTypes())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generating %s key: %w", keyType, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating stub PKCS#10 request: %w", err)
	}
	return key, csr, nil
}

// encodeKey PEM-encodes key as a PKCS#8 "PRIVATE KEY" block, as the kubelet
// writes it to keyPath and the credential bundle.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshaling private key to PKCS#8: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// cleanCertificateChain re-encodes every PEM block as a header-less
// CERTIFICATE block and drops whatever sits between blocks, like the kubelet
// does before projecting a chain.
func cleanCertificateChain(in []byte) []byte {
	var out bytes.Buffer
	for rest := in; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
	}
	return out.Bytes()
}

// newRequest builds a PodCertificateRequest exactly as the kubelet's
// createPodCertificateRequest does. Note the owner reference: APIVersion, Kind,
// Name and UID only; Controller and BlockOwnerDeletion are left unset (nil).
func newRequest(pod *corev1.Pod, saUID types.UID, node *corev1.Node, src *corev1.PodCertificateProjection, csr []byte) *certsv1.PodCertificateRequest {
	return &certsv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:    pod.Namespace,
			GenerateName: "req-",
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1",
				Kind:       "Pod",
				Name:       pod.Name,
				UID:        pod.UID,
			}},
		},
		Spec: certsv1.PodCertificateRequestSpec{
			SignerName:                src.SignerName,
			PodName:                   pod.Name,
			PodUID:                    pod.UID,
			ServiceAccountName:        pod.Spec.ServiceAccountName,
			ServiceAccountUID:         saUID,
			NodeName:                  types.NodeName(node.Name),
			NodeUID:                   node.UID,
			MaxExpirationSeconds:      src.MaxExpirationSeconds,
			StubPKCS10Request:         csr,
			UnverifiedUserAnnotations: src.UserAnnotations,
		},
	}
}

// createRequest generates a key, reads the ServiceAccount's UID (the kubelet
// GETs it for every request) and creates the request. mutate, when set, edits
// the request just before it is sent.
func (s *Sim) createRequest(ctx context.Context, pod *corev1.Pod, src *corev1.PodCertificateProjection, mutate func(*certsv1.PodCertificateRequest)) (*certsv1.PodCertificateRequest, crypto.Signer, error) {
	sa, err := s.cs.CoreV1().ServiceAccounts(pod.Namespace).Get(ctx, pod.Spec.ServiceAccountName, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("fetching service account %s/%s: %w", pod.Namespace, pod.Spec.ServiceAccountName, err)
	}
	node, err := s.currentNode()
	if err != nil {
		return nil, nil, err
	}
	key, csr, err := NewKeyAndCSR(src.KeyType)
	if err != nil {
		return nil, nil, err
	}
	req := newRequest(pod, sa.UID, node, src, csr)
	if mutate != nil {
		mutate(req)
	}
	created, err := s.cs.CertificatesV1().PodCertificateRequests(req.Namespace).Create(ctx, req, metav1.CreateOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("creating PodCertificateRequest for pod %s/%s (signer %s, key %s): %w", pod.Namespace, pod.Name, src.SignerName, src.KeyType, err)
	}
	return created, key, nil
}

// CreateRequest makes one PodCertificateRequest for an existing pod the way
// the kubelet would (fresh key of src.KeyType, this node's UID, the
// ServiceAccount's live UID), letting tests change fields first (a wrong
// podUID, say). The sim does not track it: use WaitTerminal. The pod's
// namespace, name, UID and serviceAccountName are used as given. With
// Options.NodeConfig on a cluster with NodeAuthorization, NodeRestriction
// checks it at creation (a wrong podUID or a signer the pod does not mount is
// rejected there); with admin credentials anything well-formed is accepted.
func (s *Sim) CreateRequest(ctx context.Context, pod *corev1.Pod, src corev1.PodCertificateProjection, mutate func(*certsv1.PodCertificateRequest)) (*certsv1.PodCertificateRequest, crypto.Signer, error) {
	p := pod.DeepCopy()
	if p.Spec.ServiceAccountName == "" {
		p.Spec.ServiceAccountName = "default"
	}
	return s.createRequest(ctx, p, &src, mutate)
}

// TerminalCondition returns the Issued, Denied or Failed condition of a
// request, or nil while it is pending. The apiserver allows at most one.
func TerminalCondition(pcr *certsv1.PodCertificateRequest) *metav1.Condition {
	for i := range pcr.Status.Conditions {
		switch pcr.Status.Conditions[i].Type {
		case certsv1.PodCertificateRequestConditionTypeIssued,
			certsv1.PodCertificateRequestConditionTypeDenied,
			certsv1.PodCertificateRequestConditionTypeFailed:
			return &pcr.Status.Conditions[i]
		}
	}
	return nil
}

// WaitTerminal waits until the named request is Issued, Denied or Failed and
// returns it. It watches that one object (not the node's informer), so it also
// works for requests made by CreateRequest with another nodeName.
func (s *Sim) WaitTerminal(ctx context.Context, namespace, name string) (*certsv1.PodCertificateRequest, error) {
	// The admin client: the node authorizer lets a kubelet list requests only
	// by spec.nodeName.
	api := s.admin.CertificatesV1().PodCertificateRequests(namespace)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return api.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return api.Watch(ctx, o)
		},
	}
	var last *certsv1.PodCertificateRequest
	ev, err := watchtools.UntilWithSync(ctx, lw, &certsv1.PodCertificateRequest{}, nil, func(ev watch.Event) (bool, error) {
		pcr, ok := ev.Object.(*certsv1.PodCertificateRequest)
		if !ok {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			return false, fmt.Errorf("PodCertificateRequest %s/%s was deleted before reaching a terminal state", namespace, name)
		}
		last = pcr
		return TerminalCondition(pcr) != nil, nil
	})
	if err != nil {
		if errors.Is(err, watchtools.ErrWatchClosed) || ctx.Err() != nil {
			state := "not seen"
			if last != nil {
				state = "pending"
			}
			return nil, fmt.Errorf("waiting for PodCertificateRequest %s/%s (%s): %w", namespace, name, state, err)
		}
		return nil, err
	}
	return ev.Object.(*certsv1.PodCertificateRequest), nil
}
