package kubeletsim_test

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
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

const testSignerName = "test.anchorage.dev/signer"

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's global logger, which
	// complains with a stack trace if it is never set.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

type env struct {
	cluster *localcluster.Cluster
	signer  *testSigner
	sim     *kubeletsim.Sim
}

func startSim(t *testing.T, c *localcluster.Cluster, opts kubeletsim.Options) *kubeletsim.Sim {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Log = testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	sim, err := kubeletsim.New(c.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	return sim
}

// TestSim shares one apiserver, signer and node across subtests (an apiserver
// start costs seconds); each subtest uses its own namespace.
func TestSim(t *testing.T) {
	c := localcluster.StartT(t, localcluster.Options{Name: "kubeletsim"})
	e := &env{cluster: c, signer: startSigner(t, c.Clientset, testSignerName)}
	e.sim = startSim(t, c, kubeletsim.Options{NodeName: "node-a"})

	t.Run("EveryKeyTypeIsAccepted", e.testKeyTypes)
	t.Run("RequestAndFilesLikeTheKubelet", e.testRequestAndFiles)
	t.Run("DeniedIsReported", e.testDenied)
	t.Run("RefreshWithCompressedTime", e.testCompressedRefresh)
	t.Run("ForcedRefreshAndDeniedRefresh", e.testForcedRefresh)
	t.Run("TrustBundleSelection", e.testTrustBundles)
	t.Run("TrustBundleRefreshLag", e.testTrustBundleLag)
	t.Run("PodsFromOtherClients", e.testForeignPod)
	t.Run("CreateRequestOverrides", e.testCreateRequest)
}

// TestSimAsNode runs the simulator with a kubelet's own credentials against an
// apiserver with the Node authorizer and NodeRestriction, as on a real node.
func TestSimAsNode(t *testing.T) {
	c := localcluster.StartT(t, localcluster.Options{Name: "nodeauth", NodeAuthorization: true})
	startSigner(t, c.Clientset, testSignerName)
	nodeCfg, err := c.NodeConfig("node-n")
	if err != nil {
		t.Fatal(err)
	}
	sim := startSim(t, c, kubeletsim.Options{NodeName: "node-n", NodeConfig: nodeCfg})
	ctx := t.Context()

	// The Node is registered by the kubelet itself.
	if n := sim.Node(); n == nil || n.Name != "node-n" {
		t.Fatalf("node not registered: %+v", n)
	}
	// The node authorizer is really on: no listing requests cluster-wide.
	nodeCS := kubernetes.NewForConfigOrDie(nodeCfg)
	if _, err := nodeCS.CertificatesV1().PodCertificateRequests("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node listing all requests: err = %v, want Forbidden", err)
	}

	prefix := strings.ReplaceAll(testSignerName, "/", ":") + ":"
	if _, err := c.Clientset.CertificatesV1().ClusterTrustBundles().Create(ctx, &certsv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "n"},
		Spec:       certsv1.ClusterTrustBundleSpec{SignerName: testSignerName, TrustBundle: string(newCA(t))},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	src := kubeletsim.PodCertificateSource(testSignerName, "ECDSAP256")
	p, err := sim.RunPod(ctx, kubeletsim.NewPod("nodeauth", "app", "app-sa", src,
		kubeletsim.TrustBundleSource(testSignerName, &metav1.LabelSelector{}, "ca.pem"),
		corev1.VolumeProjection{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !p.Object().Status.Conditions[0].LastTransitionTime.IsZero() && p.Object().Status.Phase != corev1.PodRunning {
		t.Errorf("pod phase %s, want Running", p.Object().Status.Phase)
	}

	// NodeRestriction checks what the kubelet claims.
	_, _, err = sim.CreateRequest(ctx, p.Object(), *src.PodCertificate, func(r *certsv1.PodCertificateRequest) { r.Spec.PodUID = "not-the-pod" })
	if err == nil {
		t.Error("NodeRestriction accepted a request with a wrong podUID")
	}
	t.Logf("wrong podUID: %v", err)
	_, _, err = sim.CreateRequest(ctx, p.Object(), *kubeletsim.PodCertificateSource("other.example/signer", "ECDSAP256").PodCertificate, nil)
	if err == nil {
		t.Error("NodeRestriction accepted a request for a signer the pod does not mount")
	}
	t.Logf("unmounted signer: %v", err)

	if err := sim.DeletePod(ctx, "nodeauth", "app"); err != nil {
		t.Fatal(err)
	}
}

func (e *env) testKeyTypes(t *testing.T) {
	ctx := t.Context()
	pods := map[string]*kubeletsim.Pod{}
	for _, kt := range kubeletsim.KeyTypes() {
		p, err := e.sim.RunPod(ctx, kubeletsim.NewPod("keytypes", strings.ToLower(kt), "workload", kubeletsim.PodCertificateSource(testSignerName, kt)))
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		pods[kt] = p
	}
	for kt, p := range pods {
		if err := p.WaitIssued(timeout(ctx, 60*time.Second)); err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		key := readKey(t, filepath.Join(p.VolumeDir(kubeletsim.VolumeName), kubeletsim.KeyFile))
		if got := keyType(key); got != kt {
			t.Errorf("key file of %s holds a %s key", kt, got)
		}
		chain := readChain(t, filepath.Join(p.VolumeDir(kubeletsim.VolumeName), kubeletsim.CertificateChainFile))
		if !publicKeyOf(key).(interface{ Equal(crypto.PublicKey) bool }).Equal(chain[0].PublicKey) {
			t.Errorf("%s: leaf is not for the projected key", kt)
		}
	}
}

func (e *env) testRequestAndFiles(t *testing.T) {
	ctx := t.Context()
	src := kubeletsim.PodCertificateSource(testSignerName, "ECDSAP256")
	src.PodCertificate.MaxExpirationSeconds = ptr.To[int32](7200)
	src.PodCertificate.UserAnnotations = map[string]string{"test.anchorage.dev/color": "blue"}
	pod := kubeletsim.NewPod("layout", "web", "web-sa", src)
	p, err := e.sim.RunPod(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	// The request, field by field, against the live objects.
	reqs := p.Requests()
	if len(reqs) != 1 {
		t.Fatalf("Requests() = %d requests, want 1", len(reqs))
	}
	pcr := reqs[0]
	live := p.Object()
	sa, err := e.cluster.Clientset.CoreV1().ServiceAccounts("layout").Get(ctx, "web-sa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := e.sim.Node()
	if !strings.HasPrefix(pcr.Name, "req-") || pcr.GenerateName != "req-" {
		t.Errorf("request name %q (generateName %q), want generated from req-", pcr.Name, pcr.GenerateName)
	}
	wantOwner := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "web", UID: live.UID}
	if len(pcr.OwnerReferences) != 1 || pcr.OwnerReferences[0] != wantOwner {
		t.Errorf("ownerReferences = %+v, want [%+v] (no controller, no blockOwnerDeletion)", pcr.OwnerReferences, wantOwner)
	}
	spec := pcr.Spec
	if spec.SignerName != testSignerName || spec.PodName != "web" || spec.PodUID != live.UID ||
		spec.ServiceAccountName != "web-sa" || spec.ServiceAccountUID != sa.UID ||
		string(spec.NodeName) != node.Name || spec.NodeUID != node.UID {
		t.Errorf("spec identities wrong: %+v (pod %s, sa %s, node %s)", spec, live.UID, sa.UID, node.UID)
	}
	if ptr.Deref(spec.MaxExpirationSeconds, 0) != 7200 {
		t.Errorf("maxExpirationSeconds = %v, want 7200", spec.MaxExpirationSeconds)
	}
	if spec.UnverifiedUserAnnotations["test.anchorage.dev/color"] != "blue" {
		t.Errorf("unverifiedUserAnnotations = %v", spec.UnverifiedUserAnnotations)
	}
	csr, err := x509.ParseCertificateRequest(spec.StubPKCS10Request)
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.RawSubject) > 2 || len(csr.Extensions) > 0 || len(csr.DNSNames)+len(csr.URIs) > 0 {
		t.Errorf("stub CSR is not empty: subject %q, %d extensions", csr.Subject, len(csr.Extensions))
	}

	// The AtomicWriter layout.
	dir := p.VolumeDir(kubeletsim.VolumeName)
	if !strings.Contains(dir, filepath.Join("pods", string(live.UID), "volumes", "kubernetes.io~projected", kubeletsim.VolumeName)) {
		t.Errorf("volume dir %s is not laid out like /var/lib/kubelet", dir)
	}
	target, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil || !strings.HasPrefix(target, "..20") {
		t.Fatalf("..data -> %q, %v; want a link to a ..<timestamp> folder", target, err)
	}
	for _, f := range []string{kubeletsim.CredentialBundleFile, kubeletsim.KeyFile, kubeletsim.CertificateChainFile} {
		if l, err := os.Readlink(filepath.Join(dir, f)); err != nil || l != filepath.Join("..data", f) {
			t.Errorf("%s -> %q, %v; want ..data/%s", f, l, err, f)
		}
		fi, err := os.Stat(filepath.Join(dir, target, f))
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, %v; want 0644", f, fi.Mode(), err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 { // ..data, ..<ts>, three links
		t.Errorf("volume dir has %d entries, want 5: %v", len(entries), entries)
	}

	// Contents: bundle = PRIVATE KEY then the cleaned chain.
	keyPEM := mustRead(t, filepath.Join(dir, kubeletsim.KeyFile))
	chainPEM := mustRead(t, filepath.Join(dir, kubeletsim.CertificateChainFile))
	bundle := mustRead(t, filepath.Join(dir, kubeletsim.CredentialBundleFile))
	if !bytes.Equal(bundle, slices.Concat(keyPEM, chainPEM)) {
		t.Error("credential bundle is not key file + chain file")
	}
	if blocks := pemTypes(bundle); !slices.Equal(blocks, []string{"PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"}) {
		t.Errorf("credential bundle blocks %v, want PRIVATE KEY, CERTIFICATE, CERTIFICATE", blocks)
	}
	if bytes.Contains(chainPEM, []byte("intermediate follows")) {
		t.Error("text between the signer's PEM blocks was not dropped")
	}
	chain := readChain(t, filepath.Join(dir, kubeletsim.CertificateChainFile))
	key := readKey(t, filepath.Join(dir, kubeletsim.KeyFile))
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("leaf does not match the key")
	}
	if chain[0].NotAfter.Sub(chain[0].NotBefore) != 2*time.Hour {
		t.Errorf("leaf lifetime %v, want maxExpirationSeconds (2h)", chain[0].NotAfter.Sub(chain[0].NotBefore))
	}

	// The pod runs once its volume is there.
	if !p.Status().Running || live.Status.Phase != corev1.PodRunning || live.Status.PodIP == "" {
		t.Errorf("pod status %s, podIP %q; want Running with an IP", live.Status.Phase, live.Status.PodIP)
	}

	// Deleting the pod removes its files.
	if err := e.sim.DeletePod(ctx, "layout", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("volume dir still there after DeletePod: %v", err)
	}
	if _, err := e.cluster.Clientset.CoreV1().Pods("layout").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod still in the API after DeletePod: %v", err)
	}
}

func (e *env) testDenied(t *testing.T) {
	ctx := t.Context()
	src := kubeletsim.PodCertificateSource(testSignerName, "ED25519")
	src.PodCertificate.UserAnnotations = map[string]string{denyAnnotation: "true"}
	p, err := e.sim.RunPod(ctx, kubeletsim.NewPod("denied", "nope", "", src))
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitIssued(timeout(ctx, 30*time.Second))
	if err == nil || !strings.Contains(err.Error(), "denied") || !strings.Contains(err.Error(), "TestDenied") {
		t.Fatalf("WaitIssued = %v; want an error naming the Denied condition and its reason", err)
	}
	t.Logf("WaitIssued: %v", err)
	st := p.Status()
	if st.Running || st.Volumes[0].Written {
		t.Errorf("denied pod: running %v, volume written %v; want neither", st.Running, st.Volumes[0].Written)
	}
	if _, err := os.Lstat(filepath.Join(p.VolumeDir(kubeletsim.VolumeName), "..data")); !os.IsNotExist(err) {
		t.Errorf("files written for a denied pod: %v", err)
	}
	// The kubelet's Warning event.
	eventually(t, 10*time.Second, func() error {
		evs, err := e.cluster.Clientset.CoreV1().Events("denied").List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.uid", string(p.UID())).String(),
		})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "Denied" && ev.Type == corev1.EventTypeWarning && ev.Source.Component == "kubelet" {
				return nil
			}
		}
		return fmt.Errorf("no Denied warning event among %d events", len(evs.Items))
	})
}

func (e *env) testCompressedRefresh(t *testing.T) {
	ctx := t.Context()
	// A second node in the same cluster, where the first certificate is
	// refreshed one second after issuance (and the next one much later, so
	// that the test sees exactly one refresh).
	var issuances atomic.Int32
	sim := startSim(t, e.cluster, kubeletsim.Options{
		NodeName: "node-fast",
		RefreshAfter: func(*certsv1.PodCertificateRequest) time.Duration {
			if issuances.Add(1) == 1 {
				return time.Second
			}
			return time.Hour
		},
	})
	p, err := sim.RunPod(ctx, kubeletsim.NewPod("refresh", "fast", "", kubeletsim.PodCertificateSource(testSignerName, "ECDSAP384")))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	dir := p.VolumeDir(kubeletsim.VolumeName)
	first := p.Status().Projections[0].Issued
	firstKey := mustRead(t, filepath.Join(dir, kubeletsim.KeyFile))
	firstData, _ := os.Readlink(filepath.Join(dir, "..data"))

	err = p.WaitFor(timeout(ctx, 30*time.Second), func(st kubeletsim.Status) bool {
		pr := st.Projections[0]
		return pr.Issued != nil && pr.Issued.Name != first.Name && pr.Written
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.sim.Pod("refresh", "fast") != nil {
		t.Error("node-a tracks a pod of node-fast")
	}
	second := p.Status().Projections[0].Issued
	if bytes.Equal(second.Spec.StubPKCS10Request, first.Spec.StubPKCS10Request) {
		t.Error("refresh reused the key")
	}
	if key := mustRead(t, filepath.Join(dir, kubeletsim.KeyFile)); bytes.Equal(key, firstKey) {
		t.Error("key file unchanged after refresh")
	}
	if data, _ := os.Readlink(filepath.Join(dir, "..data")); data == firstData {
		t.Error("..data still points at the first version")
	}
	// Old versions are cleaned up: one timestamped folder at a time.
	eventually(t, 5*time.Second, func() error {
		if m, _ := filepath.Glob(filepath.Join(dir, "..20*")); len(m) != 1 {
			return fmt.Errorf("%d timestamped folders, want 1: %v", len(m), m)
		}
		return nil
	})
	// Key and leaf from the credential bundle match.
	blocks := mustRead(t, filepath.Join(dir, kubeletsim.CredentialBundleFile))
	keyBlock, rest := pem.Decode(blocks)
	leafBlock, _ := pem.Decode(rest)
	if keyBlock == nil || leafBlock == nil {
		t.Fatal("credential bundle lacks a key or a certificate")
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(leafBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.(*ecdsa.PrivateKey).Public()) {
		t.Error("after refresh the leaf does not match the key")
	}
}

func (e *env) testForcedRefresh(t *testing.T) {
	ctx := t.Context()
	p, err := e.sim.RunPod(ctx, kubeletsim.NewPod("forced", "app", "", kubeletsim.PodCertificateSource(testSignerName, "ECDSAP256")))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	first := p.Requests()[0].Name
	firstChain := mustRead(t, filepath.Join(p.VolumeDir(kubeletsim.VolumeName), kubeletsim.CertificateChainFile))

	if err := e.sim.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.Requests()[0].Name; got == first {
		t.Fatalf("Refresh returned before creating a new request (latest is still %s)", got)
	}
	if err := p.WaitFor(timeout(ctx, 30*time.Second), func(st kubeletsim.Status) bool {
		return st.Projections[0].Issued.Name != first && st.Projections[0].Written
	}); err != nil {
		t.Fatal(err)
	}
	refreshedChain := mustRead(t, filepath.Join(p.VolumeDir(kubeletsim.VolumeName), kubeletsim.CertificateChainFile))
	if bytes.Equal(firstChain, refreshedChain) {
		t.Fatal("chain file unchanged after a forced refresh")
	}

	// A Denied refresh is terminal: the kubelet stops serving the old
	// credentials and never asks again; the files stay as they were.
	e.signer.denyPod(p.UID(), "NoLongerWelcome")
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Until the refresh request is answered the old credentials are served.
	if err := p.WaitFor(timeout(ctx, 30*time.Second), func(st kubeletsim.Status) bool {
		return st.Projections[0].Condition != nil
	}); err != nil {
		t.Fatal(err)
	}
	err = p.WaitIssued(timeout(ctx, 30*time.Second))
	if err == nil || !strings.Contains(err.Error(), "NoLongerWelcome") {
		t.Fatalf("WaitIssued after a denied refresh = %v, want the denial", err)
	}
	denied := p.Requests()[0].Name
	if err := p.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.Requests()[0].Name; got != denied {
		t.Errorf("a new request %s after a denial; the kubelet never retries", got)
	}
	if st := p.Status(); st.Volumes[0].Written || st.Projections[0].Issued != nil {
		t.Errorf("after denial: volume written %v, issued %v; want neither", st.Volumes[0].Written, st.Projections[0].Issued)
	}
	if got := mustRead(t, filepath.Join(p.VolumeDir(kubeletsim.VolumeName), kubeletsim.CertificateChainFile)); !bytes.Equal(got, refreshedChain) {
		t.Error("files changed after a denied refresh")
	}
}

func (e *env) testTrustBundles(t *testing.T) {
	ctx := t.Context()
	ctbs := e.cluster.Clientset.CertificatesV1().ClusterTrustBundles()
	caA, caB, caC, caD, caOther := newCA(t), newCA(t), newCA(t), newCA(t), newCA(t)
	mk := func(name, signer string, labels map[string]string, pems ...[]byte) {
		t.Helper()
		_, err := ctbs.Create(ctx, &certsv1.ClusterTrustBundle{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec:       certsv1.ClusterTrustBundleSpec{SignerName: signer, TrustBundle: string(bytes.Join(pems, nil))},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	prefix := strings.ReplaceAll(testSignerName, "/", ":") + ":"
	peerA := map[string]string{"test.anchorage.dev/peer": "a"}
	mk(prefix+"a1", testSignerName, peerA, caA)
	mk(prefix+"a2", testSignerName, peerA, caA, caC) // caA twice across bundles: deduplicated
	mk(prefix+"b", testSignerName, map[string]string{"test.anchorage.dev/peer": "b"}, caB)
	mk("other.example:signer:a", "other.example/signer", peerA, caOther) // same labels, other signer
	mk("unlinked", "", peerA, caOther)

	sel := func(m map[string]string) *metav1.LabelSelector { return &metav1.LabelSelector{MatchLabels: m} }
	named := corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{Name: ptr.To("unlinked"), Path: "named.pem"}}
	none := kubeletsim.TrustBundleSource(testSignerName, nil, "none.pem")
	none.ClusterTrustBundle.Optional = ptr.To(true)
	p, err := e.sim.RunPod(ctx, kubeletsim.NewPod("bundles", "reader", "",
		kubeletsim.TrustBundleSource(testSignerName, sel(peerA), "peer-a.pem"),
		kubeletsim.TrustBundleSource(testSignerName, &metav1.LabelSelector{}, "all.pem"),
		none, named,
	))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	dir := p.VolumeDir(kubeletsim.VolumeName)
	wantCerts(t, filepath.Join(dir, "peer-a.pem"), caA, caC)
	wantCerts(t, filepath.Join(dir, "all.pem"), caA, caB, caC)
	wantCerts(t, filepath.Join(dir, "none.pem"))
	wantCerts(t, filepath.Join(dir, "named.pem"), caOther)

	// A new matching bundle is projected without any call to the simulator.
	mk(prefix+"a3", testSignerName, peerA, caD)
	eventually(t, 10*time.Second, func() error {
		return certsEqual(filepath.Join(dir, "peer-a.pem"), caA, caC, caD)
	})
	wantCerts(t, filepath.Join(dir, "all.pem"), caA, caB, caC, caD)

	// A required source that matches nothing keeps the pod from starting.
	q, err := e.sim.RunPod(ctx, kubeletsim.NewPod("bundles", "stuck", "", kubeletsim.TrustBundleSource(testSignerName, nil, "none.pem")))
	if err != nil {
		t.Fatal(err)
	}
	err = q.WaitIssued(timeout(ctx, 2*time.Second))
	if err == nil || !strings.Contains(err.Error(), "matched zero ClusterTrustBundles") {
		t.Errorf("WaitIssued for a nil selector = %v, want a timeout naming the empty match", err)
	}
}

// testTrustBundleLag runs a node of its own that resyncs its pods every few
// hundred milliseconds: syncs during the lag must keep the old bundle files.
func (e *env) testTrustBundleLag(t *testing.T) {
	const lag, jitter = 2 * time.Second, 0.5
	sim := startSim(t, e.cluster, kubeletsim.Options{
		NodeName: "node-lag", ResyncPeriod: 200 * time.Millisecond,
		TrustBundleRefreshDelay: lag, TrustBundleRefreshJitter: jitter,
	})
	ctx := t.Context()
	ctbs := e.cluster.Clientset.CertificatesV1().ClusterTrustBundles()
	caA, caB := newCA(t), newCA(t)
	labels := map[string]string{"test.anchorage.dev/peer": "lag"}
	ctb, err := ctbs.Create(ctx, &certsv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(testSignerName, "/", ":") + ":lag", Labels: labels},
		Spec:       certsv1.ClusterTrustBundleSpec{SignerName: testSignerName, TrustBundle: string(caA)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := sim.RunPod(ctx, kubeletsim.NewPod("bundle-lag", "reader", "",
		kubeletsim.TrustBundleSource(testSignerName, &metav1.LabelSelector{MatchLabels: labels}, "ca.pem")))
	if err != nil {
		t.Fatal(err)
	}
	// A starting pod gets the bundles at once.
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.VolumeDir(kubeletsim.VolumeName), "ca.pem")
	wantCerts(t, path, caA)

	ctb.Spec.TrustBundle = string(caA) + string(caB)
	changed := time.Now() // before the update: the event comes after it
	if _, err := ctbs.Update(ctx, ctb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := changed.Add(time.Duration(float64(lag)*(1+jitter)) + 10*time.Second)
	for {
		readAt := time.Now()
		if certsEqual(path, caA, caB) == nil {
			if early := readAt.Sub(changed); early < lag {
				t.Fatalf("bundle files rewritten %s after the change, before the lag of %s", early, lag)
			}
			t.Logf("bundle files rewritten within %s of the change (lag %s, jitter %.1f)", readAt.Sub(changed), lag, jitter)
			return
		}
		if err := certsEqual(path, caA); err != nil {
			t.Fatalf("during the lag: %v", err)
		}
		if readAt.After(deadline) {
			t.Fatalf("bundle files not rewritten %s after the change", readAt.Sub(changed))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) testForeignPod(t *testing.T) {
	ctx := t.Context()
	cs := e.cluster.Clientset
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("foreign").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := kubeletsim.NewPod("foreign", "scheduled", "default", kubeletsim.PodCertificateSource(testSignerName, "ECDSAP256"),
		corev1.VolumeProjection{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "https://hub.example"}})
	pod.Spec.NodeName = "node-a" // what the scheduler would do
	if _, err := cs.CoreV1().Pods("foreign").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var p *kubeletsim.Pod
	eventually(t, 10*time.Second, func() error {
		if p = e.sim.Pod("foreign", "scheduled"); p == nil {
			return fmt.Errorf("simulator has not picked up the pod")
		}
		return nil
	})
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	tok := string(mustRead(t, filepath.Join(p.VolumeDir(kubeletsim.VolumeName), "token")))
	if strings.Count(tok, ".") != 2 {
		t.Errorf("token file does not hold a JWT: %q", tok)
	}

	// A graceful delete by someone else: the kubelet tears down and confirms.
	dir := p.VolumeDir(kubeletsim.VolumeName)
	if err := cs.CoreV1().Pods("foreign").Delete(ctx, "scheduled", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if _, err := cs.CoreV1().Pods("foreign").Get(ctx, "scheduled", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return fmt.Errorf("volume still there: %v", err)
		}
		return nil
	})
	if !p.Status().Deleted {
		t.Error("Status().Deleted not set")
	}
}

func (e *env) testCreateRequest(t *testing.T) {
	ctx := t.Context()
	p, err := e.sim.RunPod(ctx, kubeletsim.NewPod("override", "target", "", kubeletsim.PodCertificateSource(testSignerName, "ECDSAP256")))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitIssued(timeout(ctx, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	src := *kubeletsim.PodCertificateSource(testSignerName, "ED25519").PodCertificate
	pcr, key, err := e.sim.CreateRequest(ctx, p.Object(), src, func(r *certsv1.PodCertificateRequest) { r.Spec.PodUID = "not-the-pod" })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := key.(ed25519.PrivateKey); !ok {
		t.Errorf("key is a %T, want ed25519", key)
	}
	done, err := e.sim.WaitTerminal(timeout(ctx, 30*time.Second), pcr.Namespace, pcr.Name)
	if err != nil {
		t.Fatal(err)
	}
	if c := kubeletsim.TerminalCondition(done); c.Type != "Denied" || c.Reason != "PodUIDMismatch" {
		t.Errorf("condition %+v, want Denied/PodUIDMismatch", c)
	}

	// And one the signer accepts, proving the returned key is the CSR's.
	pcr, key, err = e.sim.CreateRequest(ctx, p.Object(), src, nil)
	if err != nil {
		t.Fatal(err)
	}
	done, err = e.sim.WaitTerminal(timeout(ctx, 30*time.Second), pcr.Namespace, pcr.Name)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(done.Status.CertificateChain))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(ed25519.PublicKey).Equal(leaf.PublicKey) {
		t.Error("issued leaf does not match the returned key")
	}
}

// --- helpers ---

func timeout(ctx context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(ctx, d)
	_ = cancel // released when the test's context ends
	return ctx
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	var last error
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, d, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	}); err != nil {
		t.Fatalf("not within %v: %v", d, last)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemTypes(b []byte) []string {
	var out []string
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		out = append(out, blk.Type)
	}
}

func readKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	blk, _ := pem.Decode(mustRead(t, path))
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("%s: no PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

func readChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range certDERs(mustRead(t, path)) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no certificates", path)
	}
	return out
}

func certDERs(b []byte) [][]byte {
	var out [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		out = append(out, blk.Bytes)
	}
}

func publicKeyOf(k crypto.Signer) crypto.PublicKey { return k.Public() }

func keyType(k crypto.Signer) string {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return fmt.Sprintf("RSA%d", k.N.BitLen())
	case *ecdsa.PrivateKey:
		return "ECDSAP" + strings.TrimPrefix(k.Curve.Params().Name, "P-")
	case ed25519.PrivateKey:
		return "ED25519"
	}
	return fmt.Sprintf("%T", k)
}

func newCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "bundle CA " + serial.String()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// certsEqual reports whether the file holds exactly the given certificates
// (in any order: the kubelet shuffles them).
func certsEqual(path string, pems ...[]byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	got := certDERs(b)
	var want [][]byte
	for _, p := range pems {
		want = append(want, certDERs(p)...)
	}
	sortDER := func(s [][]byte) { slices.SortFunc(s, bytes.Compare) }
	sortDER(got)
	sortDER(want)
	if !slices.EqualFunc(got, want, bytes.Equal) {
		return fmt.Errorf("%s holds %d certificates, want %d (or different ones)", filepath.Base(path), len(got), len(want))
	}
	return nil
}

func wantCerts(t *testing.T, path string, pems ...[]byte) {
	t.Helper()
	if err := certsEqual(path, pems...); err != nil {
		t.Error(err)
	}
}
