package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/internal/agent/hubclient"
	"github.com/anchorage-dev/anchorage/internal/agent/pcrsigner"
	"github.com/anchorage-dev/anchorage/internal/agent/profiles"
	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// FieldManager and the leader-election lock name.
const (
	FieldManager   = "anchorage-member-agent"
	leaderLockName = "anchorage-member-agent"
)

// Scheme is the agent's scheme: client-go types and mcs-api ServiceExports.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(mcsv1beta1.Install(s))
	return s
}

// Agent is a configured member agent, ready to Start.
type Agent struct {
	Manager manager.Manager
	Pools   *capool.Store
	// Registry holds the agent's own metrics (served with
	// controller-runtime's on the metrics address).
	Registry *prometheus.Registry
	Issuer   string
}

// Option changes how New builds the agent beyond its flags.
type Option func(*deps)

type deps struct {
	hubToken func(context.Context) (string, error)
	reported func()
}

// hubPollTimeout bounds one long poll on the agent's side, above the
// hub's default --long-poll-timeout of 60 s.
const hubPollTimeout = 90 * time.Second

// bundleResync is how often the leader re-applies the hub's last answer
// without being told a bundle changed (events repair at once).
const bundleResync = 5 * time.Minute

// WithHubToken replaces reading --hub-token-file (the sandbox and tests
// mint tokens with the TokenRequest API).
func WithHubToken(f func(context.Context) (string, error)) Option {
	return func(d *deps) { d.hubToken = f }
}

// WithReported is called after every successful report to the hub.
func WithReported(f func()) Option { return func(d *deps) { d.reported = f } }

// New builds the agent for the cluster reached through cfg. It reads the
// issuer from the apiserver when opts.Issuer is empty.
func New(ctx context.Context, opts *Options, cfg *rest.Config, options ...Option) (*Agent, error) {
	var d deps
	for _, o := range options {
		o(&d)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := ctrl.LoggerFrom(ctx).WithValues("cluster", opts.ClusterName)
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.KubeAPIQPS, opts.KubeAPIBurst
	cfg.UserAgent = "anchorage-member-agent"

	issuer := opts.Issuer
	if issuer == "" {
		var err error
		if issuer, err = DiscoverIssuer(ctx, cfg); err != nil {
			return nil, err
		}
		log.Info("discovered the service-account issuer", "issuer", issuer)
	}
	td := spiffeid.RequireTrustDomainFromString(opts.TrustDomain)
	keyTypes, _ := signers.ParseKeyTypes(opts.LeafKeyTypes)
	scheme := Scheme()
	strip := cache.TransformStripManagedFields()

	registry := prometheus.NewRegistry()
	// Go and process metrics come from controller-runtime's registry,
	// gathered beside this one: registering them here too would make
	// every scrape fail on duplicates.

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        log,
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              leaderLockName,
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &opts.LeaderElectionLeaseDuration,
		RenewDeadline:                 &opts.LeaderElectionRenewDeadline,
		RetryPeriod:                   &opts.LeaderElectionRetryPeriod,
		HealthProbeBindAddress:        opts.HealthProbeBindAddress,
		// The agent serves its own registry (below) so that several agents
		// can live in one process (the sandbox) without sharing metrics.
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{
			DefaultTransform: strip,
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
				&corev1.Pod{}:    {Transform: slimPod},
			},
		},
		// Names are unique within an agent; the sandbox and tests run several
		// agents in one process, which controller-runtime's process-wide
		// name check would refuse.
		// Warmup: a standby replica keeps its sources (the request
		// informers) synced, so a failover starts signing at once.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true), EnableWarmup: ptr.To(true)},
		Client: client.Options{Cache: &client.CacheOptions{
			// Requests are read from the per-signer caches, never the
			// manager's, which would otherwise watch every signer's.
			DisableFor: []client.Object{&certsv1.PodCertificateRequest{}},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the controller manager: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Service{}, profiles.SelectorIndex, profiles.IndexServiceSelector); err != nil {
		return nil, fmt.Errorf("indexing Services: %w", err)
	}
	// Register every informer now so that they all list at start, in
	// parallel, before the controllers run; otherwise the first request
	// would wait for the cluster's pods to be listed on its first read.
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Secret{}, &corev1.Service{}, &mcsv1beta1.ServiceExport{}, &certsv1.ClusterTrustBundle{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
			return nil, fmt.Errorf("watching %T: %w", obj, err)
		}
	}

	env := signers.Env{}
	pools := &capool.Store{
		Client:    mgr.GetClient(),
		Cache:     mgr.GetCache(),
		Namespace: opts.Namespace,
		Env:       env,
		Log:       log.WithName("capool"),
		Signers: []capool.SignerConfig{
			{Profile: withLifetime(signers.SPIFFECAProfile(opts.ClusterName, td.Name(), issuer), opts.CALifetime), ImportSecret: opts.SPIFFECAImportSecret},
			{Profile: withLifetime(signers.ServiceDNSCAProfile(opts.ClusterName, opts.ClusterDomain, issuer), opts.CALifetime), ImportSecret: opts.ServiceDNSCAImportSecret},
		},
	}
	if err := mgr.Add(pools); err != nil {
		return nil, err
	}

	var (
		hub        *federation.Client
		follower   *hubclient.Follower
		clusterset profiles.Clusterset = profiles.StaticClusterset(opts.ClustersetMember)
	)
	if opts.HubURL != "" {
		if hub, err = hubClient(opts, d); err != nil {
			return nil, err
		}
		follower = &hubclient.Follower{
			Hub: hub, Client: mgr.GetClient(), Informers: mgr.GetCache(), PollTimeout: hubPollTimeout, Resync: bundleResync, MaxBackoff: 30 * time.Second,
			Log: log.WithName("bundles"), Metrics: hubclient.NewFollowerMetrics(registry),
			Changes: make(chan event.GenericEvent, 1),
		}
		clusterset = follower // the hub says whether this cluster is in the clusterset
	}

	recorder := mgr.GetEventRecorder(FieldManager)
	metrics := pcrsigner.NewMetrics(registry)
	profileFor := map[string]pcrsigner.Profile{
		signers.SPIFFESignerName: &profiles.SPIFFE{TrustDomain: td},
		signers.ServiceDNSSignerName: &profiles.ServiceDNS{
			Reader:        mgr.GetCache(),
			ClusterName:   opts.ClusterName,
			ClusterDomain: opts.ClusterDomain,
			Clusterset:    clusterset,
		},
	}
	for _, signer := range signers.SignerNames() {
		requests, err := cache.New(mgr.GetConfig(), cache.Options{
			Scheme:           scheme,
			Mapper:           mgr.GetRESTMapper(),
			DefaultTransform: strip,
			ByObject: map[client.Object]cache.ByObject{
				&certsv1.PodCertificateRequest{}: {Field: fields.OneTermEqualSelector("spec.signerName", signer)},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("creating the %s request cache: %w", signer, err)
		}
		r := &pcrsigner.Reconciler{
			Signer:         signer,
			Profile:        profileFor[signer],
			Client:         mgr.GetClient(),
			APIReader:      mgr.GetAPIReader(),
			Pools:          pools,
			PoolChanges:    pools.Subscribe(),
			Issuer:         issuer,
			Keys:           keyTypes,
			PendingTimeout: opts.ServiceDNSPendingTimeout,
			Env:            env,
			Clock:          clock.RealClock{},
			Recorder:       recorder,
			Metrics:        metrics,
		}
		if err := r.SetupWithManager(mgr, requests, opts.Workers); err != nil {
			return nil, fmt.Errorf("setting up the %s controller: %w", signer, err)
		}
	}

	rotation := &capool.Rotation{
		Store: pools, PromotionDelay: opts.CAPromotionDelay, Clock: clock.RealClock{}, Recorder: recorder,
		Metrics: capool.NewRotationMetrics(registry),
	}
	var gateChanges chan event.GenericEvent
	if follower != nil {
		rotation.Gate, gateChanges = follower, follower.Changes
	}
	if err := rotation.SetupWithManager(mgr, gateChanges); err != nil {
		return nil, fmt.Errorf("setting up CA rotation: %w", err)
	}

	local := &trustbundles.Local{
		Client:      mgr.GetClient(),
		Pools:       pools,
		TrustDomain: td.Name(),
		Clock:       clock.RealClock{},
		Recorder:    recorder,
	}
	if opts.PodName != "" && opts.PodNamespace != "" {
		local.EventObject = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: opts.PodName, Namespace: opts.PodNamespace}}
	}
	if err := local.SetupWithManager(mgr, pools.Subscribe()); err != nil {
		return nil, fmt.Errorf("setting up the trust-bundle publisher: %w", err)
	}

	if hub != nil {
		cs, err := kubernetes.NewForConfig(mgr.GetConfig())
		if err != nil {
			return nil, err
		}
		if err := mgr.Add(&hubclient.Reporter{
			Hub:        hub,
			Reader:     mgr.GetAPIReader(),
			JoinSecret: client.ObjectKey{Namespace: opts.Namespace, Name: opts.JoinTokenSecret},
			REST:       cs.Discovery().RESTClient(),
			Pools:      pools,
			Interval:   opts.ReportInterval,
			Changes:    pools.Subscribe(),
			Version:    Version,
			Log:        log.WithName("hub"),
			Reported:   d.reported,
		}); err != nil {
			return nil, err
		}
		if err := mgr.Add(follower); err != nil {
			return nil, err
		}
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Followers are ready once their caches are; the leader once its CA
	// pools are loaded and it can sign.
	if err := mgr.AddReadyzCheck("ca-pools", func(*http.Request) error {
		select {
		case <-mgr.Elected():
			if !pools.Loaded() {
				return errors.New("CA pools not loaded yet")
			}
		default:
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if opts.MetricsBindAddress != "0" && opts.MetricsBindAddress != "" {
		if err := mgr.Add(metricsServer(opts.MetricsBindAddress, prometheus.Gatherers{crmetrics.Registry, registry})); err != nil {
			return nil, err
		}
	}
	return &Agent{Manager: mgr, Pools: pools, Registry: registry, Issuer: issuer}, nil
}

// Start runs the agent until ctx ends.
func (a *Agent) Start(ctx context.Context) error { return a.Manager.Start(ctx) }

// Run builds and runs the agent until ctx ends.
func Run(ctx context.Context, opts *Options, cfg *rest.Config) error {
	a, err := New(ctx, opts, cfg)
	if err != nil {
		return err
	}
	return a.Start(ctx)
}

func withLifetime(p signers.CAProfile, d time.Duration) signers.CAProfile {
	p.Lifetime = d
	return p
}

// DiscoverIssuer reads the service-account issuer from the apiserver's
// OIDC discovery document.
func DiscoverIssuer(ctx context.Context, cfg *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the issuer from the apiserver's /.well-known/openid-configuration (set --issuer to skip this): %w", err)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Issuer == "" {
		return "", fmt.Errorf("the apiserver's /.well-known/openid-configuration has no issuer (set --issuer): %v", err)
	}
	return doc.Issuer, nil
}

// slimPod keeps only what the signers read of a pod, so that caching every
// pod of a large cluster stays cheap.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, Labels: pod.Labels, ResourceVersion: pod.ResourceVersion,
		},
		Spec: corev1.PodSpec{Hostname: pod.Spec.Hostname, Subdomain: pod.Spec.Subdomain, ServiceAccountName: pod.Spec.ServiceAccountName, NodeName: pod.Spec.NodeName},
	}, nil
}

// metricsServer serves g on addr as a manager runnable (on every replica).
func metricsServer(addr string, g prometheus.Gatherer) manager.Runnable {
	return cmdutil.EveryReplica(func(ctx context.Context) error {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving metrics on %s: %w", addr, err)
		}
		return nil
	})
}

// Main runs the agent against the cluster of opts.Kubeconfig (or the
// in-cluster config).
func Main(ctx context.Context, opts *Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	cfg, err := cmdutil.RESTConfig(opts.Kubeconfig)
	if err != nil {
		return err
	}
	return Run(ctx, opts, cfg)
}

// hubClient is the agent's client of the hub API. It has no overall
// timeout (a long poll lasts a minute); each call bounds its own.
func hubClient(opts *Options, d deps) (*federation.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = 0
	if opts.HubCAFile != "" {
		u, err := url.Parse(opts.HubURL)
		if err != nil {
			return nil, fmt.Errorf("--hub-url %q: %w", opts.HubURL, err)
		}
		transport.TLSClientConfig = hubclient.PinnedTLS(opts.HubCAFile, u.Hostname())
	}
	token := d.hubToken
	if token == nil {
		token = func(context.Context) (string, error) {
			b, err := os.ReadFile(opts.HubTokenFile)
			if err != nil {
				return "", fmt.Errorf("reading the projected hub token (mount a serviceAccountToken volume with audience %s at --hub-token-file): %w", opts.HubURL, err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	return &federation.Client{HubURL: opts.HubURL, Cluster: opts.ClusterName, HTTP: &http.Client{Transport: transport}, Token: token}, nil
}

// Version of the agent, reported to the hub.
const Version = "v0.1.0-dev"
