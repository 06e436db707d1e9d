package trustdomains

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/anchorage-dev/anchorage/internal/localcluster"
	hubv1alpha1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1/crds"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// recorder keeps Events; client-go's FakeRecorder blocks when its channel
// is full.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Eventf(regarding, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	name := ""
	if o, ok := regarding.(client.Object); ok {
		name = o.GetName()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s %s", name, eventtype, reason, fmt.Sprintf(note, args...)))
}

func (r *recorder) has(name, eventtype, reason string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if strings.HasPrefix(e, name+" "+eventtype+" "+reason+" ") {
			return true
		}
	}
	return false
}

// source is a spiffebundle.Source serving whatever bundle it holds, for
// whichever trust domain is asked.
type source struct {
	mu sync.Mutex
	b  *spiffebundle.Bundle
}

func (s *source) set(b *spiffebundle.Bundle) { s.mu.Lock(); s.b = b; s.mu.Unlock() }

func (s *source) GetBundleForTrustDomain(spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b, nil
}

type env struct {
	t      *testing.T
	client client.Client
	rec    *recorder
}

// start runs a hub apiserver and the controller in a manager.
func start(t *testing.T) *env {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := hubv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := localcluster.StartT(t, localcluster.Options{CRDs: crds.All(), Scheme: scheme})
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	mgr, err := ctrl.NewManager(c.Config, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        log,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                true,
		LeaderElectionID:              "anchorage-hub-test",
		LeaderElectionNamespace:       metav1.NamespaceDefault,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, client: c.Client, rec: &recorder{}}
	// Every httptest TLS server has the same certificate.
	probe := httptest.NewTLSServer(http.NotFoundHandler())
	roots := x509.NewCertPool()
	roots.AddCert(probe.Certificate())
	probe.Close()
	r := &Reconciler{
		Recorder:       e.rec,
		Clock:          clock.RealClock{},
		RootCAs:        roots,
		MinRefreshHint: time.Second,
		RetryBase:      200 * time.Millisecond,
		FetchTimeout:   5 * time.Second,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return e
}

// newCA returns a CA of td, as anchorage's agents make them.
func newCA(t *testing.T, td string) *signers.CA {
	t.Helper()
	ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile("test", td, "https://issuer.test"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func bundleOf(td string, seq uint64, hint time.Duration, cas ...*signers.CA) *spiffebundle.Bundle {
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString(td))
	for _, ca := range cas {
		b.AddX509Authority(ca.Certificate)
	}
	b.SetSequenceNumber(seq)
	if hint > 0 {
		b.SetRefreshHint(hint)
	}
	return b
}

// webEndpoint serves src's bundle over https_web with httptest's
// certificate, which the reconciler's roots trust.
func (e *env) webEndpoint(td string, src *source) *httptest.Server {
	e.t.Helper()
	h, err := federation.NewHandler(spiffeid.RequireTrustDomainFromString(td), src)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	e.t.Cleanup(srv.Close)
	return srv
}

// spiffeEndpoint serves src's bundle over https_spiffe with an X509-SVID
// for id issued by ca.
func (e *env) spiffeEndpoint(id spiffeid.ID, ca *signers.CA, src *source) *httptest.Server {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate, key.Public(), ca.Key)
	if err != nil {
		e.t.Fatal(err)
	}
	h, err := federation.NewHandler(id.TrustDomain(), src)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: crypto.Signer(key)}}}
	srv.StartTLS()
	e.t.Cleanup(srv.Close)
	return srv
}

func (e *env) create(name string, spec hubv1alpha1.TrustDomainSpec) {
	e.t.Helper()
	td := &hubv1alpha1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := e.client.Create(context.Background(), td); err != nil {
		e.t.Fatalf("creating TrustDomain %s: %v", name, err)
	}
}

func (e *env) get(name string) *hubv1alpha1.TrustDomain {
	e.t.Helper()
	var td hubv1alpha1.TrustDomain
	if err := e.client.Get(context.Background(), client.ObjectKey{Name: name}, &td); err != nil {
		e.t.Fatalf("reading TrustDomain %s: %v", name, err)
	}
	return &td
}

// wait polls TrustDomain name until ok or timeout.
func (e *env) wait(name string, timeout time.Duration, what string, ok func(*hubv1alpha1.TrustDomain) bool) *hubv1alpha1.TrustDomain {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		td := e.get(name)
		if ok(td) {
			return td
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("TrustDomain %s: %s not reached in %v; status: %+v", name, what, timeout, td.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ready(reason string, status metav1.ConditionStatus) func(*hubv1alpha1.TrustDomain) bool {
	return func(td *hubv1alpha1.TrustDomain) bool {
		c := meta.FindStatusCondition(td.Status.Conditions, hubv1alpha1.ConditionReady)
		return c != nil && c.Status == status && c.Reason == reason && c.ObservedGeneration == td.Generation
	}
}

func sequence(n int64) func(*hubv1alpha1.TrustDomain) bool {
	return func(td *hubv1alpha1.TrustDomain) bool { return td.Status.SequenceNumber == n }
}

// sameBundle checks that the status bundle holds exactly want.
func sameBundle(t *testing.T, td *hubv1alpha1.TrustDomain, want *spiffebundle.Bundle) {
	t.Helper()
	got, err := spiffebundle.Parse(want.TrustDomain(), []byte(td.Status.Bundle))
	if err != nil {
		t.Fatalf("status.bundle does not parse: %v\n%s", err, td.Status.Bundle)
	}
	if !got.Equal(want) {
		t.Fatalf("status.bundle = %s, want the bundle with sequence %d", td.Status.Bundle, must(want.SequenceNumber()))
	}
}

func must[T any](v T, _ bool) T { return v }

func TestTrustDomains(t *testing.T) {
	e := start(t)
	const web = "web.example"

	t.Run("bundle picked up, refresh hint honoured", func(t *testing.T) {
		ca1, ca2 := newCA(t, web), newCA(t, web)
		b1 := bundleOf(web, 1, 2*time.Second, ca1)
		src := &source{b: b1}
		srv := e.webEndpoint(web, src)
		e.create("picked-up", hubv1alpha1.TrustDomainSpec{
			TrustDomain:    web,
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: srv.URL + "/bundle", Profile: hubv1alpha1.ProfileHTTPSWeb},
		})
		td := e.wait("picked-up", 20*time.Second, "Ready=True", ready(hubv1alpha1.ReasonBundleFetched, metav1.ConditionTrue))
		sameBundle(t, td, b1)
		if td.Status.SequenceNumber != 1 || td.Status.RefreshHint != 2 || td.Status.LastFetchError != "" || td.Status.LastFetchTime == nil {
			t.Fatalf("status = %+v, want sequence 1, refresh hint 2, a fetch time and no error", td.Status)
		}

		b2 := bundleOf(web, 2, 2*time.Second, ca1, ca2)
		changed := time.Now()
		src.set(b2)
		td = e.wait("picked-up", 4*time.Second, "sequence 2", sequence(2))
		t.Logf("the new bundle arrived after %v (hint 2 s)", time.Since(changed).Round(10*time.Millisecond))
		sameBundle(t, td, b2)
	})

	t.Run("long refresh hint is not polled early", func(t *testing.T) {
		ca := newCA(t, web)
		b1 := bundleOf(web, 7, time.Hour, ca)
		src := &source{b: b1}
		srv := e.webEndpoint(web, src)
		e.create("long-hint", hubv1alpha1.TrustDomainSpec{
			TrustDomain:    web,
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: srv.URL, Profile: hubv1alpha1.ProfileHTTPSWeb},
		})
		td := e.wait("long-hint", 20*time.Second, "sequence 7", sequence(7))
		if td.Status.RefreshHint != 3600 {
			t.Fatalf("refreshHint = %d, want 3600", td.Status.RefreshHint)
		}
		src.set(bundleOf(web, 8, time.Hour, ca, newCA(t, web)))
		time.Sleep(3 * time.Second)
		sameBundle(t, e.get("long-hint"), b1)
	})

	t.Run("endpoint down keeps the last good bundle", func(t *testing.T) {
		b1 := bundleOf(web, 3, time.Second, newCA(t, web))
		srv := e.webEndpoint(web, &source{b: b1})
		e.create("down", hubv1alpha1.TrustDomainSpec{
			TrustDomain:    web,
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: srv.URL, Profile: hubv1alpha1.ProfileHTTPSWeb},
		})
		before := e.wait("down", 20*time.Second, "Ready=True", ready(hubv1alpha1.ReasonBundleFetched, metav1.ConditionTrue))
		srv.Close()
		td := e.wait("down", 10*time.Second, "Ready=False/FetchFailed", ready(hubv1alpha1.ReasonFetchFailed, metav1.ConditionFalse))
		if td.Status.Bundle != before.Status.Bundle || td.Status.SequenceNumber != 3 || td.Status.RefreshHint != 1 {
			t.Fatalf("the last good bundle was not kept: %+v", td.Status)
		}
		if td.Status.LastFetchError == "" {
			t.Fatal("lastFetchError is empty")
		}
		if !e.rec.has("down", "Warning", hubv1alpha1.ReasonFetchFailed) {
			t.Fatalf("no Warning FetchFailed Event; events: %q", e.rec.events)
		}
		t.Logf("lastFetchError: %s", td.Status.LastFetchError)
	})

	t.Run("wrong trust domain or empty bundle is InvalidBundle", func(t *testing.T) {
		b1 := bundleOf(web, 1, time.Second, newCA(t, web))
		src := &source{b: b1}
		srv := e.webEndpoint(web, src)
		e.create("invalid", hubv1alpha1.TrustDomainSpec{
			TrustDomain:    web,
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: srv.URL, Profile: hubv1alpha1.ProfileHTTPSWeb},
		})
		before := e.wait("invalid", 20*time.Second, "Ready=True", ready(hubv1alpha1.ReasonBundleFetched, metav1.ConditionTrue))

		src.set(bundleOf("other.example", 2, time.Second, newCA(t, "other.example")))
		td := e.wait("invalid", 10*time.Second, "InvalidBundle", ready(hubv1alpha1.ReasonInvalidBundle, metav1.ConditionFalse))
		if td.Status.Bundle != before.Status.Bundle || td.Status.SequenceNumber != 1 {
			t.Fatalf("the last good bundle was not kept: %+v", td.Status)
		}
		if !strings.Contains(td.Status.LastFetchError, "other.example") {
			t.Fatalf("lastFetchError = %q, want it to name the other trust domain", td.Status.LastFetchError)
		}

		// Back to good, then empty.
		src.set(b1)
		e.wait("invalid", 10*time.Second, "Ready=True", ready(hubv1alpha1.ReasonBundleFetched, metav1.ConditionTrue))
		// go-spiffe refuses to parse a bundle without authorities.
		src.set(bundleOf(web, 9, time.Second))
		td = e.wait("invalid", 10*time.Second, "InvalidBundle", ready(hubv1alpha1.ReasonInvalidBundle, metav1.ConditionFalse))
		if td.Status.Bundle != before.Status.Bundle || td.Status.SequenceNumber != 1 || !strings.Contains(td.Status.LastFetchError, "no authorities") {
			t.Fatalf("empty bundle: status = %+v", td.Status)
		}
	})

	t.Run("https_spiffe with a bootstrap bundle", func(t *testing.T) {
		const spire = "spire.example"
		ca := newCA(t, spire)
		id := spiffeid.RequireFromString("spiffe://" + spire + "/spire/server")
		boot := bundleOf(spire, 1, 0, ca)
		bootJSON, err := boot.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b2 := bundleOf(spire, 2, time.Second, ca)
		src := &source{b: b2}
		srv := e.spiffeEndpoint(id, ca, src)
		e.create("spiffe", hubv1alpha1.TrustDomainSpec{
			TrustDomain:     spire,
			BootstrapBundle: string(bootJSON),
			BundleEndpoint: hubv1alpha1.BundleEndpoint{
				URL: srv.URL, Profile: hubv1alpha1.ProfileHTTPSSPIFFE, EndpointSPIFFEID: id.String(),
			},
		})
		td := e.wait("spiffe", 20*time.Second, "Ready=True", ready(hubv1alpha1.ReasonBundleFetched, metav1.ConditionTrue))
		sameBundle(t, td, b2)

		// Later fetches authenticate with the stored bundle.
		b3 := bundleOf(spire, 3, time.Second, ca, newCA(t, spire))
		src.set(b3)
		sameBundle(t, e.wait("spiffe", 5*time.Second, "sequence 3", sequence(3)), b3)

		e.create("spiffe-wrong-id", hubv1alpha1.TrustDomainSpec{
			TrustDomain:     spire,
			BootstrapBundle: string(bootJSON),
			BundleEndpoint: hubv1alpha1.BundleEndpoint{
				URL: srv.URL, Profile: hubv1alpha1.ProfileHTTPSSPIFFE, EndpointSPIFFEID: "spiffe://" + spire + "/not-the-server",
			},
		})
		td = e.wait("spiffe-wrong-id", 20*time.Second, "FetchFailed", ready(hubv1alpha1.ReasonFetchFailed, metav1.ConditionFalse))
		if td.Status.Bundle != "" {
			t.Fatalf("a bundle was stored from an endpoint with the wrong SPIFFE ID: %s", td.Status.Bundle)
		}
		t.Logf("lastFetchError: %s", td.Status.LastFetchError)
	})
}
