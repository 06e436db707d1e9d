package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-logr/logr/testr"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/internal/hub/api"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/sandbox"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

type hubEnv struct {
	t      *testing.T
	ctx    context.Context
	sb     *sandbox.Hub
	hubCl  *localcluster.Cluster
	hub    *hubapp.Hub
	url    string
	caFile string
	https  *http.Client
}

// startHub runs a hub cluster and one hub replica (internal/sandbox, as
// the sandbox command does); mutate adjusts every replica's options.
func startHub(t *testing.T, ctx context.Context, mutate ...func(*hubapp.Options)) *hubEnv {
	t.Helper()
	localcluster.RequireAssets(t)
	short := func(o *hubapp.Options) {
		o.ReportLease = 20 * time.Second
		o.LeaderElectionLeaseDuration, o.LeaderElectionRenewDeadline, o.LeaderElectionRetryPeriod = 4*time.Second, 3*time.Second, 300*time.Millisecond
	}
	sb, err := sandbox.StartHub(ctx, sandbox.HubOptions{Dir: t.TempDir(), Mutate: append([]func(*hubapp.Options){short}, mutate...), Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sb.Stop)
	return &hubEnv{t: t, ctx: ctx, sb: sb, hubCl: sb.Cluster, hub: sb.Hub, url: sb.URL, caFile: sb.CAFile, https: sb.HTTPS}
}

// startReplica starts another replica serving externalURL.
func (e *hubEnv) startReplica(name, externalURL string) (*hubapp.Hub, string) {
	e.t.Helper()
	h, url, err := e.sb.StartReplica(name, externalURL)
	if err != nil {
		e.t.Fatal(err)
	}
	return h, url
}

func (e *hubEnv) get(url string) (*http.Response, []byte) {
	e.t.Helper()
	resp, body, err := sandbox.Fetch(e.ctx, e.https, url)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

func (e *hubEnv) member(name string) *hubv1.MemberCluster {
	e.t.Helper()
	var mc hubv1.MemberCluster
	if err := e.hubCl.Client.Get(e.ctx, client.ObjectKey{Name: name}, &mc); err != nil {
		e.t.Fatal(err)
	}
	return &mc
}

// register creates a MemberCluster without a member cluster behind it.
func (e *hubEnv) register(name, trustDomain string) string {
	e.t.Helper()
	issuer := e.url + "/clusters/" + name
	if err := e.hubCl.Client.Create(e.ctx, &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: hubv1.MemberClusterSpec{Issuer: issuer, TrustDomain: trustDomain}}); err != nil {
		e.t.Fatal(err)
	}
	return issuer
}

func (e *hubEnv) joinToken(name string) string {
	e.t.Helper()
	tok, err := e.sb.JoinToken(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, d, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

type memberEnv struct {
	cl   *localcluster.Cluster
	stop func()
	m    *sandbox.Member
}

// startMember starts a member cluster under the hub and its agent, joined
// the way an operator joins it (internal/sandbox).
func (e *hubEnv) startMember(name, trustDomain string, federatesWith ...string) *memberEnv {
	e.t.Helper()
	return e.startMemberWith(name, trustDomain, federatesWith)
}

// startMemberWith is startMember with agent options adjusted by agent.
func (e *hubEnv) startMemberWith(name, trustDomain string, federatesWith []string, agent ...func(*agentapp.Options)) *memberEnv {
	e.t.Helper()
	short := func(o *agentapp.Options) {
		o.ReportInterval = time.Second
		o.LeaderElectionLeaseDuration, o.LeaderElectionRenewDeadline, o.LeaderElectionRetryPeriod = 4*time.Second, 3*time.Second, 300*time.Millisecond
	}
	m, err := e.sb.AddMember(e.ctx, sandbox.MemberOptions{Name: name, TrustDomain: trustDomain, Dir: e.t.TempDir(), Log: testr.New(e.t),
		Spec:  func(s *hubv1.MemberClusterSpec) { s.FederatesWith = federatesWith },
		Agent: append([]func(*agentapp.Options){short}, agent...)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(m.Stop)
	return &memberEnv{cl: m.Cluster, stop: m.StopAgent, m: m}
}

func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	c, err := sandbox.HTTPSClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (m *memberEnv) pool(t *testing.T, signer string) *signers.Pool {
	t.Helper()
	var s corev1.Secret
	if err := m.cl.Client.Get(context.Background(), client.ObjectKey{Namespace: "anchorage-system", Name: capool.SecretName(signer)}, &s); err != nil {
		t.Fatal(err)
	}
	p, err := signers.UnmarshalPool(s.Data[capool.PoolKey])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The agent joins and reports; the hub serves the member's issuer: OIDC
// discovery that go-oidc uses to verify the member apiserver's own tokens,
// the SPIFFE bundle that go-spiffe parses, PEM anchors, and the AIA target
// of an issued certificate; a second hub replica serves the same.
func TestHubServesMemberIssuer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx)
	east := e.startMember("east", "east.example")
	issuer := e.url + "/clusters/east"

	poll(t, 60*time.Second, "east joined, ready and reporting both signers' anchors", func() bool {
		mc := e.member("east")
		return meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined) &&
			meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionReady) && len(mc.Status.Anchors) == 2
	})
	mc := e.member("east")
	if mc.Status.AgentVersion != agentapp.Version || mc.Status.AnchorsSequence != 1 {
		t.Errorf("status agentVersion %q anchorsSequence %d", mc.Status.AgentVersion, mc.Status.AnchorsSequence)
	}
	var s corev1.Secret
	if err := e.hubCl.Client.Get(ctx, client.ObjectKey{Namespace: "anchorage-hub", Name: api.JoinTokenSecretName("east")}, &s); err == nil {
		t.Error("the join token survived its use")
	}

	// SPIFFE bundle: go-spiffe parses it; it holds the member's SPIFFE CA.
	var bundleBody []byte
	poll(t, 20*time.Second, "the SPIFFE bundle served", func() bool {
		resp, body := e.get(issuer + "/.well-known/spiffe-bundle")
		bundleBody = body
		return resp.StatusCode == http.StatusOK
	})
	td := spiffeid.RequireTrustDomainFromString("east.example")
	b, err := spiffebundle.Parse(td, bundleBody)
	if err != nil {
		t.Fatalf("go-spiffe cannot parse the served bundle: %v\n%s", err, bundleBody)
	}
	spiffePool := east.pool(t, signers.SPIFFESignerName)
	if got, want := b.X509Authorities(), spiffePool.Anchors(time.Now()); len(got) != 1 || !got[0].Equal(want[0]) {
		t.Errorf("bundle authorities %d, want the member's SPIFFE CA", len(got))
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != 1 {
		t.Errorf("spiffe_sequence %d %v", seq, ok)
	}
	// The whole trust domain's bundle, for SPIRE and other consumers.
	if resp, body := e.get(e.url + "/trust-domains/east.example/bundle"); resp.StatusCode != http.StatusOK {
		t.Errorf("trust domain bundle: %d %s", resp.StatusCode, body)
	}

	// PEM anchors of the service-dns signer.
	resp, body := e.get(issuer + "/.well-known/anchorage/trust-bundles/service-dns.pem")
	dnsPool := east.pool(t, signers.ServiceDNSSignerName)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, signers.EncodeCertificatesPEM(dnsPool.Anchors(time.Now()))) {
		t.Errorf("service-dns PEM: %d\n%s", resp.StatusCode, body)
	}

	// A certificate issued in east names, in its AIA URL, a document the
	// hub serves: the CA that issued it.
	sim, err := kubeletsim.New(east.cl.Config, kubeletsim.Options{NodeName: "node-1", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	p, err := sim.RunPod(ctx, kubeletsim.NewPod("default", "web", "web", kubeletsim.PodCertificateSource(signers.SPIFFESignerName, "ECDSAP256")))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := p.WaitIssued(wctx); err != nil {
		t.Fatal(err)
	}
	reqs := p.Requests()
	chain, err := signers.ParseCertificatesPEM([]byte(reqs[len(reqs)-1].Status.CertificateChain))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := signers.IssuerFromCertificate(chain[0]); got != issuer {
		t.Errorf("issuer in the certificate %q, want %q", got, issuer)
	}
	resp, der := e.get(chain[0].IssuingCertificateURL[0])
	if resp.StatusCode != http.StatusOK || !bytes.Equal(der, spiffePool.CAs[0].Certificate.Raw) || resp.Header.Get("Content-Type") != "application/pkix-cert" {
		t.Errorf("AIA %s: %d %s", chain[0].IssuingCertificateURL[0], resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if err := chain[0].CheckSignatureFrom(mustParse(t, der)); err != nil {
		t.Errorf("the AIA document did not issue the leaf: %v", err)
	}

	// go-oidc discovers the member through the hub and verifies a token the
	// member's own apiserver minted: the hub hosts the cluster's issuer.
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, e.https), issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery through the hub: %v", err)
	}
	tok, err := east.cl.Token(ctx, "default", "reader", []string{"https://relying-party.example"}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.VerifierContext(oidc.ClientContext(ctx, e.https), &oidc.Config{ClientID: "https://relying-party.example"}).Verify(ctx, tok)
	if err != nil {
		t.Fatalf("go-oidc rejects the member's token: %v", err)
	}
	if idt.Subject != "system:serviceaccount:default:reader" || idt.Issuer != issuer {
		t.Errorf("verified %s from %s", idt.Subject, idt.Issuer)
	}

	// A second replica on the same hub cluster serves the same documents.
	second, _ := e.startReplica("hub-1", e.url)
	e.compareReplica(t, second, issuer)
}

// compareReplica fetches documents from replica h (addressed by its own
// listener, the external URL's path) and compares them with the first.
func (e *hubEnv) compareReplica(t *testing.T, h *hubapp.Hub, issuer string) {
	t.Helper()
	path := strings.TrimPrefix(issuer, e.url)
	// A development replica makes its own certificate: trust its CA.
	other := &hubEnv{t: t, ctx: e.ctx, https: httpsClient(t, h.CAFile)}
	for _, doc := range []string{"/.well-known/openid-configuration", "/openid/v1/jwks", "/.well-known/spiffe-bundle", "/.well-known/anchorage/trust-bundles/spiffe.pem"} {
		var r1, r2 *http.Response
		var b1, b2 []byte
		poll(t, 20*time.Second, "replica serving "+doc, func() bool {
			r1, b1 = e.get(e.url + path + doc)
			r2, b2 = other.get("https://" + h.Addr() + path + doc)
			return r2.StatusCode == http.StatusOK && bytes.Equal(b1, b2)
		})
		if r1.Header.Get("ETag") != r2.Header.Get("ETag") {
			t.Errorf("%s: ETags differ between replicas: %s vs %s", doc, r1.Header.Get("ETag"), r2.Header.Get("ETag"))
		}
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
