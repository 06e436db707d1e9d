package sandbox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/hub/api"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/manifests"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1/crds"
)

// Hub is a hub cluster and its first hub replica.
type Hub struct {
	Cluster *localcluster.Cluster
	Hub     *hubapp.Hub
	URL     string
	CAFile  string
	// HTTPS trusts the hub's certificate.
	HTTPS *http.Client

	ctx   context.Context
	stops []func()
	// replicas stop the hub replicas (StopReplicas), apart from stops.
	replicas []func()
	log      logr.Logger
	mutate   []func(*hubapp.Options)
	dir      string
}

// HubOptions configures StartHub.
type HubOptions struct {
	// Dir holds the hub's files (etcd data unless Ephemeral, the CA file).
	Dir string
	// Mutate adjusts every replica's options (tests shorten leases).
	Mutate []func(*hubapp.Options)
	Log    logr.Logger
}

// StartHub starts a hub cluster and one hub replica on a loopback port.
func StartHub(ctx context.Context, o HubOptions) (*Hub, error) {
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "anchorage-hub-")
		if err != nil {
			return nil, err
		}
		o.Dir = dir
	}
	cl, err := localcluster.Start(ctx, localcluster.Options{Name: "hub", CRDs: crds.All(), Scheme: hubapp.Scheme(), DataDir: dataDir(o.Dir, "hub")})
	if err != nil {
		return nil, err
	}
	h := &Hub{Cluster: cl, ctx: ctx, log: o.Log, mutate: o.Mutate, dir: o.Dir}
	h.stops = append(h.stops, func() { _ = cl.Stop() })
	if err := cl.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "anchorage-hub"}}); err != nil {
		h.Stop()
		return nil, fmt.Errorf("creating namespace anchorage-hub: %w", err)
	}
	if h.Hub, h.URL, err = h.StartReplica("hub-0", ""); err != nil {
		h.Stop()
		return nil, err
	}
	h.CAFile = h.Hub.CAFile
	if h.HTTPS, err = HTTPSClient(h.CAFile); err != nil {
		h.Stop()
		return nil, err
	}
	return h, nil
}

// StartReplica starts another hub replica (externalURL "" = its own
// address) and returns it with its external URL.
func (h *Hub) StartReplica(name, externalURL string) (*hubapp.Hub, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	if externalURL == "" {
		externalURL = "https://" + ln.Addr().String()
	}
	opts := hubapp.NewOptions()
	opts.ExternalURL = externalURL
	opts.DevCAFile = filepath.Join(h.dir, name+"-ca.pem")
	for _, m := range h.mutate {
		m(opts)
	}
	ctx, cancel := context.WithCancel(ctrl.LoggerInto(h.ctx, h.log.WithName(name)))
	hub, err := hubapp.New(ctx, opts, h.Cluster.Config, ln)
	if err != nil {
		cancel()
		_ = ln.Close()
		return nil, "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hub.Start(ctx); err != nil {
			h.log.Error(err, "hub replica stopped", "replica", name)
		}
	}()
	h.replicas = append(h.replicas, func() { cancel(); <-done })
	return hub, externalURL, nil
}

// StopReplicas stops every hub replica; the hub cluster keeps running
// (a hub outage: StartReplica brings a hub back).
func (h *Hub) StopReplicas() {
	for i := len(h.replicas) - 1; i >= 0; i-- {
		h.replicas[i]()
	}
	h.replicas = nil
}

// Stop stops the replicas, then the hub cluster.
func (h *Hub) Stop() {
	h.StopReplicas()
	for i := len(h.stops) - 1; i >= 0; i-- {
		h.stops[i]()
	}
	h.stops = nil
}

// Member is a member cluster and its agent.
type Member struct {
	Name, TrustDomain, Issuer string
	Cluster                   *localcluster.Cluster
	Agent                     *agentapp.Agent
	// Kubeconfig is where WriteKubeconfig last wrote an admin kubeconfig
	// ("" before), for the commands the demo shows.
	Kubeconfig             string
	nodeAuthorization      bool
	stopAgent, stopCluster func()
	// ctx and opts start the agent again (RestartAgent).
	ctx  context.Context
	opts MemberOptions
}

// MemberOptions configures AddMember.
type MemberOptions struct {
	Name, TrustDomain string
	Dir               string
	// Agent adjusts the agent's options.
	Agent []func(*agentapp.Options)
	// Reported is called after every report to the hub.
	Reported func()
	// Spec adjusts the MemberCluster (federatesWith, clusterSet).
	Spec func(*hubv1.MemberClusterSpec)
	// NodeAuthorization starts the member's apiserver with the Node
	// authorizer and NodeRestriction, so that kubelet simulators run with a
	// node's own credentials, as on a real node.
	NodeAuthorization bool
	Log               logr.Logger
}

// AddMember registers a member with the hub, starts its apiserver with the
// issuer under the hub, applies deploy/member, copies in the join token, and
// starts its agent (authenticated as the member-agent ServiceAccount).
func (h *Hub) AddMember(ctx context.Context, o MemberOptions) (*Member, error) {
	issuer := h.URL + "/clusters/" + o.Name
	spec := hubv1.MemberClusterSpec{Issuer: issuer, TrustDomain: o.TrustDomain}
	if o.Spec != nil {
		o.Spec(&spec)
	}
	if err := h.Cluster.Client.Create(ctx, &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: o.Name}, Spec: spec}); err != nil {
		return nil, fmt.Errorf("registering %s: %w", o.Name, err)
	}
	cl, err := localcluster.Start(ctx, localcluster.Options{Name: o.Name, Issuer: issuer, Scheme: agentapp.Scheme(), DataDir: dataDir(o.Dir, o.Name), NodeAuthorization: o.NodeAuthorization})
	if err != nil {
		return nil, err
	}
	m := &Member{Name: o.Name, TrustDomain: o.TrustDomain, Issuer: issuer, Cluster: cl, nodeAuthorization: o.NodeAuthorization, stopCluster: func() { _ = cl.Stop() }}
	if err := h.join(ctx, m, o); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (h *Hub) join(ctx context.Context, m *Member, o MemberOptions) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	objs, err := manifests.Load(filepath.Join(root, "deploy", "member"))
	if err != nil {
		return err
	}
	if err := manifests.Apply(ctx, m.Cluster.Client, "anchorage-sandbox", objs); err != nil {
		return fmt.Errorf("applying deploy/member to %s: %w", m.Name, err)
	}
	token, err := h.JoinToken(ctx, m.Name)
	if err != nil {
		return err
	}
	if err := m.Cluster.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "anchorage-system", Name: "anchorage-join-token"},
		Data: map[string][]byte{"token": []byte(token)}}); err != nil {
		return fmt.Errorf("copying the join token to %s: %w", m.Name, err)
	}
	m.ctx, m.opts = ctx, o
	return h.startAgent(m)
}

// RestartAgent stops the member's agent and starts a new one with the same
// options and nothing in memory, as a rescheduled pod would.
func (h *Hub) RestartAgent(m *Member) error {
	m.StopAgent()
	return h.startAgent(m)
}

func (h *Hub) startAgent(m *Member) error {
	ctx, o := m.ctx, m.opts
	cfg, err := m.Cluster.ConfigFor(ctx, "anchorage-system", "member-agent")
	if err != nil {
		return err
	}
	opts := agentapp.NewOptions()
	opts.ClusterName, opts.TrustDomain = m.Name, m.TrustDomain
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	opts.HubURL, opts.HubCAFile, opts.ReportInterval = h.URL, h.CAFile, 2*time.Second
	for _, f := range o.Agent {
		f(opts)
	}
	agentCtx, cancel := context.WithCancel(ctrl.LoggerInto(ctx, o.Log.WithName(m.Name+"-agent")))
	reported := o.Reported
	if reported == nil {
		reported = func() {}
	}
	a, err := agentapp.New(agentCtx, opts, cfg,
		agentapp.WithHubToken(func(ctx context.Context) (string, error) {
			return m.Cluster.Token(ctx, "anchorage-system", "member-agent", []string{h.URL}, 10*time.Minute)
		}),
		agentapp.WithReported(reported))
	if err != nil {
		cancel()
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Start(agentCtx); err != nil {
			o.Log.Error(err, "agent stopped", "cluster", m.Name)
		}
	}()
	m.Agent = a
	m.stopAgent = func() { cancel(); <-done }
	return nil
}

// WaitReady waits until the hub reports the member Joined and Ready with
// both signers' anchors.
func (h *Hub) WaitReady(ctx context.Context, name string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var mc hubv1.MemberCluster
		if err := h.Cluster.Client.Get(ctx, client.ObjectKey{Name: name}, &mc); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined) &&
			meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionReady) && len(mc.Status.Anchors) == 2, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s to join and report: %w", name, err)
	}
	return nil
}

// JoinToken waits for and returns the hub's join token of a member.
func (h *Hub) JoinToken(ctx context.Context, name string) (string, error) {
	var s corev1.Secret
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return h.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: "anchorage-hub", Name: api.JoinTokenSecretName(name)}, &s) == nil, nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for the join token of %s: %w", name, err)
	}
	return string(s.Data[api.TokenKey]), nil
}

// StopAgent stops the member's agent (its cluster keeps running).
func (m *Member) StopAgent() {
	if m.stopAgent != nil {
		m.stopAgent()
		m.stopAgent = nil
	}
}

// WriteKubeconfig writes an admin kubeconfig of the member's cluster to
// path and remembers it in Kubeconfig.
func (m *Member) WriteKubeconfig(path string) error {
	if err := m.Cluster.WriteKubeconfig(path); err != nil {
		return err
	}
	m.Kubeconfig = path
	return nil
}

// Stop stops the agent, then the cluster.
func (m *Member) Stop() {
	m.StopAgent()
	if m.stopCluster != nil {
		m.stopCluster()
		m.stopCluster = nil
	}
}

// HTTPSClient trusts the CA certificates in caFile.
func HTTPSClient(caFile string) (*http.Client, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}, nil
}

// Get fetches url with the hub's client.
func (h *Hub) Get(ctx context.Context, url string) (*http.Response, []byte, error) {
	return Fetch(ctx, h.HTTPS, url)
}

// Fetch GETs url with c and reads the whole body.
func Fetch(ctx context.Context, c *http.Client, url string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// dataDir: etcd data under dir when set (kept across runs), else temporary.
func dataDir(dir, name string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, name, "etcd")
}

// moduleRoot finds the repository (deploy/member is read from it).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "deploy", "member")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the sandbox from the anchorage repository: deploy/member not found above the current folder")
		}
		dir = parent
	}
}
