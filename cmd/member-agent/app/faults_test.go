package app_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Only what can never succeed is denied, with a message saying why.
func TestDenials(t *testing.T) {
	e := newEnv(t)
	a := e.startAgent("agent", func(o *app.Options) { o.LeafKeyTypes = []string{"ECDSAP256", "RSA3072"} })
	ns := e.namespace("deny")

	expectDenied := func(t *testing.T, req *certsv1.PodCertificateRequest, reason, msg string) {
		t.Helper()
		c := kubeletsim.TerminalCondition(req)
		if c == nil || c.Type != certsv1.PodCertificateRequestConditionTypeDenied || c.Reason != reason || !strings.Contains(c.Message, msg) {
			t.Errorf("got %+v, want Denied/%s containing %q", c, reason, msg)
		}
		if req.Status.CertificateChain != "" {
			t.Error("a denied request carries a certificate")
		}
	}

	t.Run("unsupported key type", func(t *testing.T) {
		p := e.runPod(pod(ns, "ed", signers.SPIFFESignerName, "ED25519", nil, nil))
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		defer cancel()
		if err := p.WaitIssued(ctx); err == nil {
			t.Fatal("WaitIssued succeeded for a key type the signer does not allow")
		}
		expectDenied(t, e.latest(p), "UnsupportedKeyType", "supported key types: ECDSAP256, RSA3072")
	})

	// Requests for a real pod whose other fields lie, as anyone allowed to
	// create requests (not only its node) could write them.
	real := e.runPod(pod(ns, "real", signers.SPIFFESignerName, "ECDSAP256", nil, nil))
	e.waitIssued(real)
	var live corev1.Pod
	if err := e.c.Get(e.ctx, types.NamespacedName{Namespace: ns, Name: "real"}, &live); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, reason, msg string
		forge             func(*certsv1.PodCertificateRequest)
	}{
		{"pod UID mismatch", "PodUIDMismatch", "does not match pod deny/real",
			func(r *certsv1.PodCertificateRequest) { r.Spec.PodUID = "00000000-0000-0000-0000-000000000000" }},
		{"a service account that is not the pod's", "PodMismatch", `spec.serviceAccountName "cluster-admin-bot" is not the service account of pod deny/real ("workload")`,
			func(r *certsv1.PodCertificateRequest) { r.Spec.ServiceAccountName = "cluster-admin-bot" }},
		{"a node that is not the pod's", "PodMismatch", `spec.nodeName "other-node" is not the node of pod deny/real`,
			func(r *certsv1.PodCertificateRequest) { r.Spec.NodeName = "other-node" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _, err := e.sim.CreateRequest(e.ctx, &live, *live.Spec.Volumes[0].Projected.Sources[0].PodCertificate, tc.forge)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.sim.WaitTerminal(e.ctx, req.Namespace, req.Name)
			if err != nil {
				t.Fatal(err)
			}
			expectDenied(t, got, tc.reason, tc.msg)
		})
	}

	t.Run("unknown user annotation", func(t *testing.T) {
		p := e.runPod(pod(ns, "ann", signers.SPIFFESignerName, "ECDSAP256", nil, map[string]string{"example.com/path": "/admin"}))
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		defer cancel()
		_ = p.WaitIssued(ctx)
		expectDenied(t, e.latest(p), "InvalidUnverifiedUserAnnotations", "example.com/path")
	})

	if got := metricSum(t, a, "anchorage_signer_denied_total"); got != 5 {
		t.Errorf("anchorage_signer_denied_total = %v, want 5", got)
	}
}

// Apiserver errors and a CA pool that cannot be loaded leave requests
// pending; they are issued once the fault is gone, never Denied or Failed.
func TestTransientFaultsNeverDeny(t *testing.T) {
	e := newEnv(t)
	ns := e.namespace("faults")

	// A broken pool Secret, as after a botched manual edit.
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: agentNamespace, Name: capool.SecretName(signers.SPIFFESignerName)},
		Type:       capool.SecretType,
		Data:       map[string][]byte{capool.PoolKey: []byte(`{"signer":"anchorage.dev/spiffe","cas":[{"state":"active","certificates":"garbage"}]}`)},
	}
	if err := e.c.Create(e.ctx, broken); err != nil {
		t.Fatal(err)
	}
	// Every status write fails while the fault is on.
	faults := &faultyTransport{match: func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/status") && strings.Contains(r.URL.Path, "podcertificaterequests")
	}}
	faults.on.Store(true)
	e.agentCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { faults.rt = rt; return faults })
	e.startAgent("agent", nil)

	var pods []*kubeletsim.Pod
	for i := range 6 {
		signer := signers.SPIFFESignerName
		if i%2 == 1 {
			signer = signers.ServiceDNSSignerName
		}
		pods = append(pods, e.runPod(pod(ns, fmt.Sprintf("p%d", i), signer, "ECDSAP256", map[string]string{"app": "web"}, nil)))
	}
	if err := e.c.Create(e.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 443}}}}); err != nil {
		t.Fatal(err)
	}

	// service-dns has a pool and signs, but cannot write; spiffe has no pool.
	eventually(t, 30*time.Second, "status writes attempted and failing", func() (bool, error) { return faults.hits.Load() >= 6, nil })
	time.Sleep(3 * time.Second)
	for _, p := range pods {
		if c := kubeletsim.TerminalCondition(e.latest(p)); c != nil {
			t.Fatalf("request of pod %s got %s/%s during a transient fault: %s", e.latest(p).Spec.PodName, c.Type, c.Reason, c.Message)
		}
	}
	t.Logf("%d status writes failed and were retried", faults.hits.Load())

	faults.on.Store(false)
	if err := e.c.Delete(e.ctx, broken); err != nil { // the agent makes a fresh pool
		t.Fatal(err)
	}
	for _, p := range pods {
		e.waitIssued(p)
	}
}

// Two replicas, and the leader stopped mid-batch then a new replica
// started: every request is issued exactly once and none is lost.
func TestReplicasAndRestartMidBatch(t *testing.T) {
	e := newEnv(t)
	agents := []*runningAgent{e.startAgent("a", nil), e.startAgent("b", nil)}
	ns := e.namespace("batch")
	const n = 120

	var (
		mu   sync.Mutex
		pods []*kubeletsim.Pod
	)
	created := make(chan struct{})
	go func() {
		defer close(created)
		for i := range n {
			p, err := e.sim.RunPod(e.ctx, pod(ns, fmt.Sprintf("p%03d", i), signers.SPIFFESignerName, "ECDSAP256", nil, nil))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			pods = append(pods, p)
			mu.Unlock()
		}
	}()

	issued := func() int {
		var list certsv1.PodCertificateRequestList
		if err := e.c.List(e.ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		k := 0
		for i := range list.Items {
			if c := kubeletsim.TerminalCondition(&list.Items[i]); c != nil && c.Type == certsv1.PodCertificateRequestConditionTypeIssued {
				k++
			}
		}
		return k
	}
	eventually(t, 60*time.Second, "a third of the batch issued", func() (bool, error) { return issued() >= n/3, nil })

	leader := -1
	for i, a := range agents {
		select {
		case <-a.Manager.Elected():
			leader = i
		default:
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	t.Logf("stopping leader %d with %d/%d issued", leader, issued(), n)
	agents[leader].stop()
	agents = append(agents, e.startAgent("c", nil))

	<-created
	for _, p := range pods {
		e.waitIssued(p)
	}
	var total float64
	for _, a := range agents {
		total += metricSum(t, a, "anchorage_signer_issued_total")
	}
	if got := issued(); got != n {
		t.Errorf("%d requests issued, want %d", got, n)
	}
	// The apiserver freezes a request's status once Issued, so a second
	// issuance can only fail: successful writes never exceed n. A graceful
	// stop finishes the writes already in flight (a crash could leave some
	// landed but uncounted), so here every issuance is counted exactly once.
	if total != n {
		t.Errorf("the replicas counted %v successful issuances for %d requests, want exactly %d", total, n, n)
	}
	t.Logf("%v issuances counted by the replicas for %d requests issued", total, n)
	var list certsv1.PodCertificateRequestList
	if err := e.c.List(e.ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if c := list.Items[i].Status.Conditions; len(c) != 1 || c[0].Type != certsv1.PodCertificateRequestConditionTypeIssued {
			t.Errorf("request %s has conditions %+v, want exactly one Issued", list.Items[i].Name, c)
		}
	}
	if len(list.Items) != n {
		t.Errorf("%d requests exist for %d pods: the simulator asked twice", len(list.Items), n)
	}
}

// A standby replica keeps its request caches synced: they start with the
// manager's caches, not with leadership, so a new leader signs at once.
// Both replicas count a request that is still pending.
func TestStandbyKeepsRequestsSynced(t *testing.T) {
	e := newEnv(t)
	agents := []*runningAgent{e.startAgent("a", nil), e.startAgent("b", nil)}
	ns := e.namespace("standby")
	// No Service selects this pod: its service-dns request stays pending.
	if _, err := e.sim.RunPod(e.ctx, pod(ns, "alone", signers.ServiceDNSSignerName, "ECDSAP256", map[string]string{"app": "alone"}, nil)); err != nil {
		t.Fatal(err)
	}
	for i, a := range agents {
		eventually(t, 30*time.Second, fmt.Sprintf("replica %d counting the pending request", i), func() (bool, error) {
			return metricSum(t, a, "anchorage_signer_pending_requests") == 1, nil
		})
	}
}

// A real outage between the agent and its apiserver: connections reset and
// refused while the kubelet keeps creating requests. The agent loses its
// lease and is restarted; nothing is denied or failed, the trust bundles
// stay, and every request is issued once the apiserver is reachable again.
func TestAPIServerOutage(t *testing.T) {
	e := newEnv(t)
	proxy, err := e.cluster.NewProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	restarts := e.superviseAgent("agent", proxy.Config(e.agentCfg))
	ns := e.namespace("outage")
	if err := e.c.Create(e.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 443}}}}); err != nil {
		t.Fatal(err)
	}
	e.waitIssued(e.runPod(pod(ns, "before", signers.SPIFFESignerName, "ECDSAP256", nil, nil)))
	bundles := map[string]string{}
	for _, s := range signers.SignerNames() {
		bundles[s] = e.localBundle(s).ResourceVersion
	}

	proxy.Cut()
	t.Log("apiserver unreachable for the agent")
	var pods []*kubeletsim.Pod
	for i := range 8 {
		signer := signers.SPIFFESignerName
		if i%2 == 1 {
			signer = signers.ServiceDNSSignerName
		}
		pods = append(pods, e.runPod(pod(ns, fmt.Sprintf("p%d", i), signer, "ECDSAP256", map[string]string{"app": "web"}, nil)))
	}
	// Long enough for the agent to lose its lease (renew deadline 3s) and
	// be restarted into the outage.
	eventually(t, 30*time.Second, "the agent restarted during the outage", func() (bool, error) { return restarts() >= 1, nil })
	time.Sleep(2 * time.Second)
	for _, p := range pods {
		if c := kubeletsim.TerminalCondition(e.latest(p)); c != nil {
			t.Fatalf("request got %s/%s during the outage: %s", c.Type, c.Reason, c.Message)
		}
	}
	for s, rv := range bundles {
		if got := e.localBundle(s).ResourceVersion; got != rv {
			t.Errorf("bundle of %s changed during the outage", s)
		}
	}

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	for _, p := range pods {
		e.waitIssued(p)
	}
	t.Logf("all %d requests issued %v after the outage ended (%d agent restarts)", len(pods), time.Since(began).Round(time.Millisecond), restarts())
}
