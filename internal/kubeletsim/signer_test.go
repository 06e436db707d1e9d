package kubeletsim_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
)

// testSigner is a minimal PodCertificateRequest signer for these tests only:
// it issues leaves from a self-signed CA following the 1.37 status rules
// (notBefore = now-2m, lifetime min(24h, maxExpirationSeconds), beginRefreshAt
// half way, chain = leaf then CA), and denies requests whose podUID is not the
// live pod's, that carry the user annotation denyAnnotation, or whose pod UID
// was marked with denyPod.
type testSigner struct {
	cs     kubernetes.Interface
	name   string
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	caPEM  []byte

	mu     sync.Mutex
	denied map[types.UID]string // pod UID → reason
}

const denyAnnotation = "test.anchorage.dev/deny"

func startSigner(t testing.TB, cs kubernetes.Interface, signerName string) *testSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubeletsim test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	s := &testSigner{
		cs: cs, name: signerName, caKey: key, caCert: ca,
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		denied: map[types.UID]string{},
	}

	ctx, cancel := context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.signerName", signerName).String()
	}))
	inf := factory.Certificates().V1().PodCertificateRequests()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]())
	enqueue := func(obj any) {
		if pcr, ok := obj.(*certsv1.PodCertificateRequest); ok && kubeletsim.TerminalCondition(pcr) == nil {
			queue.Add(types.NamespacedName{Namespace: pcr.Namespace, Name: pcr.Name})
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }}); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				key, quit := queue.Get()
				if quit {
					return
				}
				pcr, err := inf.Lister().PodCertificateRequests(key.Namespace).Get(key.Name)
				if err == nil {
					err = s.sign(ctx, pcr.DeepCopy())
				}
				if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
					t.Logf("test signer: %s: %v", key, err)
					queue.AddRateLimited(key)
				} else {
					queue.Forget(key)
				}
				queue.Done(key)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		queue.ShutDown()
		factory.Shutdown()
		wg.Wait()
	})
	return s
}

// denyPod makes every later request of the pod Denied.
func (s *testSigner) denyPod(uid types.UID, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[uid] = reason
}

func (s *testSigner) sign(ctx context.Context, pcr *certsv1.PodCertificateRequest) error {
	if kubeletsim.TerminalCondition(pcr) != nil {
		return nil
	}
	now := time.Now().Truncate(time.Second)
	deny := func(reason, msg string) error {
		pcr.Status.Conditions = []metav1.Condition{{Type: certsv1.PodCertificateRequestConditionTypeDenied, Status: metav1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(now)}}
		_, err := s.cs.CertificatesV1().PodCertificateRequests(pcr.Namespace).UpdateStatus(ctx, pcr, metav1.UpdateOptions{})
		return err
	}
	if pcr.Spec.UnverifiedUserAnnotations[denyAnnotation] == "true" {
		return deny("TestDenied", "the pod asked to be denied")
	}
	s.mu.Lock()
	reason := s.denied[pcr.Spec.PodUID]
	s.mu.Unlock()
	if reason != "" {
		return deny(reason, "denied by the test")
	}
	pod, err := s.cs.CoreV1().Pods(pcr.Namespace).Get(ctx, pcr.Spec.PodName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && pod.UID != pcr.Spec.PodUID) {
		return deny("PodUIDMismatch", "no pod with this name and UID")
	}
	if err != nil {
		return err
	}

	csr, err := x509.ParseCertificateRequest(pcr.Spec.StubPKCS10Request)
	if err != nil {
		return deny("InvalidRequest", err.Error())
	}
	lifetime := 24 * time.Hour
	if m := pcr.Spec.MaxExpirationSeconds; m != nil && time.Duration(*m)*time.Second < lifetime {
		lifetime = time.Duration(*m) * time.Second
	}
	nb := now.Add(-2 * time.Minute)
	na := nb.Add(lifetime)
	id, _ := url.Parse(fmt.Sprintf("spiffe://test.local/ns/%s/sa/%s", pcr.Namespace, pcr.Spec.ServiceAccountName))
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    nb,
		NotAfter:     na,
		URIs:         []*url.URL{id},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}, s.caCert, csr.PublicKey, s.caKey)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	pcr.Status = certsv1.PodCertificateRequestStatus{
		Conditions: []metav1.Condition{{
			Type: certsv1.PodCertificateRequestConditionTypeIssued, Status: metav1.ConditionTrue,
			Reason: "Issued", Message: "issued by the kubeletsim test signer", LastTransitionTime: metav1.NewTime(now),
		}},
		// Comments between blocks: the kubelet must drop them.
		CertificateChain: string(leaf) + "intermediate follows\n" + string(s.caPEM),
		NotBefore:        ptrTime(nb),
		BeginRefreshAt:   ptrTime(nb.Add(lifetime / 2)),
		NotAfter:         ptrTime(na),
	}
	_, err = s.cs.CertificatesV1().PodCertificateRequests(pcr.Namespace).UpdateStatus(ctx, pcr, metav1.UpdateOptions{})
	return err
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}
