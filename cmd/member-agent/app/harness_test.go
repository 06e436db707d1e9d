package app_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/manifests"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

const (
	testIssuer      = "https://hub.example.test/clusters/east"
	testTrustDomain = "east.example"
	agentNamespace  = "anchorage-system"
)

// env is one real apiserver with deploy/member applied, a kubelet
// simulator, and agents that authenticate as the member-agent
// ServiceAccount (so every test also proves the RBAC is sufficient).
type env struct {
	t        *testing.T
	ctx      context.Context
	cluster  *localcluster.Cluster
	c        client.Client
	sim      *kubeletsim.Sim
	agentCfg *rest.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cluster := localcluster.StartT(t, localcluster.Options{Name: "east", Issuer: testIssuer, Scheme: app.Scheme()})
	objs, err := manifests.Load(filepath.Join("..", "..", "..", "deploy", "member"))
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Apply(ctx, cluster.Client, "anchorage-test", objs); err != nil {
		t.Fatalf("applying deploy/member: %v", err)
	}
	agentCfg, err := cluster.ConfigFor(ctx, agentNamespace, "member-agent")
	if err != nil {
		t.Fatal(err)
	}
	sim, err := kubeletsim.New(cluster.Config, kubeletsim.Options{NodeName: "node-1", Dir: t.TempDir(), Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	return &env{t: t, ctx: ctx, cluster: cluster, c: cluster.Client, sim: sim, agentCfg: agentCfg}
}

// testAgentOptions: the east agent, no listening ports, leases short
// enough for failover tests.
func testAgentOptions() *app.Options {
	opts := app.NewOptions()
	opts.ClusterName, opts.TrustDomain = "east", testTrustDomain
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	opts.LeaderElectionLeaseDuration, opts.LeaderElectionRenewDeadline, opts.LeaderElectionRetryPeriod = 4*time.Second, 3*time.Second, 300*time.Millisecond
	return opts
}

type runningAgent struct {
	*app.Agent
	stop func()
}

// startAgent runs an agent until the test ends or stop is called.
func (e *env) startAgent(name string, mutate func(*app.Options)) *runningAgent {
	e.t.Helper()
	opts := testAgentOptions()
	if mutate != nil {
		mutate(opts)
	}
	ctx, cancel := context.WithCancel(ctrl.LoggerInto(e.ctx, testr.NewWithOptions(e.t, testr.Options{LogTimestamp: true}).WithName(name)))
	a, err := app.New(ctx, opts, e.agentCfg)
	if err != nil {
		cancel()
		e.t.Fatalf("agent %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Start(ctx); err != nil {
			e.t.Errorf("agent %s stopped: %v", name, err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return &runningAgent{Agent: a, stop: stop}
}

func (e *env) namespace(name string) string {
	e.t.Helper()
	if err := e.c.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		e.t.Fatal(err)
	}
	return name
}

// pod returns a pod with one projected volume "creds" holding a
// podCertificate source for signer (and user annotations).
func pod(ns, name, signer, keyType string, labels, userAnnotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: "workload",
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app"}},
			Volumes: []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{PodCertificate: &corev1.PodCertificateProjection{
					SignerName:           signer,
					KeyType:              keyType,
					MaxExpirationSeconds: ptr.To[int32](86400),
					CredentialBundlePath: "credential-bundle.pem",
					UserAnnotations:      userAnnotations,
				}}},
			}}}},
		},
	}
}

// credential reads the credential bundle the simulator projected.
func credential(t *testing.T, p *kubeletsim.Pod) (crypto.Signer, []*x509.Certificate) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(p.VolumeDir("creds"), "credential-bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("credential bundle does not start with a PRIVATE KEY block")
	}
	key, err := signers.ParsePrivateKeyPEM(pem.EncodeToMemory(block))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := signers.ParseCertificatesPEM(rest)
	if err != nil {
		t.Fatal(err)
	}
	return key, chain
}

func (e *env) runPod(p *corev1.Pod) *kubeletsim.Pod {
	e.t.Helper()
	sp, err := e.sim.RunPod(e.ctx, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return sp
}

func (e *env) waitIssued(p *kubeletsim.Pod) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitIssued(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// waitRequest waits until the simulator has created the pod's request.
func (e *env) waitRequest(p *kubeletsim.Pod) {
	e.t.Helper()
	eventually(e.t, 20*time.Second, "the pod's first request", func() (bool, error) { return len(p.Requests()) > 0, nil })
}

// latest returns the pod's newest request, read live.
func (e *env) latest(p *kubeletsim.Pod) *certsv1.PodCertificateRequest {
	e.t.Helper()
	e.waitRequest(p)
	reqs := p.Requests()
	var out certsv1.PodCertificateRequest
	if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(reqs[len(reqs)-1]), &out); err != nil {
		e.t.Fatal(err)
	}
	return &out
}

// eventually polls cond every 100ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, d, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// metricSum sums a counter or gauge of the agent's registry over its label
// sets.
func metricSum(t *testing.T, a *runningAgent, name string) float64 {
	t.Helper()
	mfs, err := a.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				sum += metricValue(m)
			}
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return 0
}

// superviseAgent runs an agent through cfg the way a Deployment does: when
// it exits (it gives up leadership when it cannot renew its lease) it is
// started again a second later. It returns the number of restarts so far.
func (e *env) superviseAgent(name string, cfg *rest.Config) func() int32 {
	e.t.Helper()
	opts := testAgentOptions()
	log := testr.NewWithOptions(e.t, testr.Options{LogTimestamp: true}).WithName(name)
	ctx, cancel := context.WithCancel(ctrl.LoggerInto(e.ctx, log))
	var restarts atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			a, err := app.New(ctx, opts, cfg)
			if err == nil {
				err = a.Start(ctx)
			}
			if ctx.Err() != nil {
				return
			}
			log.Info("agent exited; restarting in 1s", "error", err)
			restarts.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
	return restarts.Load
}

// faultyTransport fails requests matching match while on is set, as an
// apiserver under stress would (503), and counts them.
type faultyTransport struct {
	rt    http.RoundTripper
	on    atomic.Bool
	match func(*http.Request) bool
	hits  atomic.Int64
}

func (f *faultyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.on.Load() && f.match(r) {
		f.hits.Add(1)
		return nil, errors.New("injected fault: connection reset by apiserver")
	}
	return f.rt.RoundTrip(r)
}
