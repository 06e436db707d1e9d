package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/anchorage-dev/anchorage/internal/cmdutil"
	"github.com/anchorage-dev/anchorage/internal/hub/api"
	"github.com/anchorage-dev/anchorage/internal/hub/members"
	"github.com/anchorage-dev/anchorage/internal/hub/trustdomains"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/oidcbundle"
)

// FieldManager of every hub write.
const FieldManager = "anchorage-hub"

// Scheme is the hub's scheme: client-go types and hub.anchorage.dev.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(hubv1.AddToScheme(s))
	return s
}

// Hub is a configured hub, ready to Start.
type Hub struct {
	Manager  manager.Manager
	Store    *oidcbundle.Store
	Sets     *members.BundleSets
	Registry *prometheus.Registry
	// CAFile is the development CA written for clients, when the hub made
	// its own certificate.
	CAFile string
	// Router is the hub's HTTP surface as its server serves it (tests put
	// it behind servers of their own).
	Router http.Handler
	ln     net.Listener
	server *http.Server
}

// Addr is the address the hub listens on.
func (h *Hub) Addr() string { return h.ln.Addr().String() }

// New builds the hub. ln, when not nil, is the listener to serve on (tests
// pick a port before they know the external URL); otherwise the hub listens
// on opts.ListenAddress.
func New(ctx context.Context, opts *Options, cfg *rest.Config, ln net.Listener) (*Hub, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := ctrl.LoggerFrom(ctx)
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst, cfg.UserAgent = opts.KubeAPIQPS, opts.KubeAPIBurst, "anchorage-hub"

	store, err := oidcbundle.NewStore(oidcbundle.Options{HubURL: opts.ExternalURL})
	if err != nil {
		return nil, err
	}
	registry := prometheus.NewRegistry()
	// Go and process metrics come from controller-runtime's registry,
	// gathered beside this one: registering them here too would make
	// every scrape fail on duplicates.

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        Scheme(),
		Logger:                        log,
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              "anchorage-hub",
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &opts.LeaderElectionLeaseDuration,
		RenewDeadline:                 &opts.LeaderElectionRenewDeadline,
		RetryPeriod:                   &opts.LeaderElectionRetryPeriod,
		// Health and metrics are served on the hub's own HTTPS server.
		HealthProbeBindAddress: "0",
		Metrics:                metricsserver.Options{BindAddress: "0"},
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}:    {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
				&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the controller manager: %w", err)
	}
	recorder := mgr.GetEventRecorder(FieldManager)
	roots, err := bundleEndpointRoots(opts.BundleEndpointCAFile)
	if err != nil {
		return nil, err
	}
	if err := (&trustdomains.Reconciler{Metrics: trustdomains.NewMetrics(registry), RootCAs: roots}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the TrustDomain poller: %w", err)
	}
	sets := &members.BundleSets{
		Reader: mgr.GetCache(), Client: mgr.GetClient(), Namespace: opts.Namespace, Clock: clock.RealClock{},
		Elected: mgr.Elected(), Metrics: members.NewBundleSetMetrics(registry),
	}
	if err := sets.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the bundle sets: %w", err)
	}
	status := &members.StatusReconciler{
		Client: mgr.GetClient(), Namespace: opts.Namespace, Clock: clock.RealClock{}, Recorder: recorder,
		TokenTTL: opts.JoinTokenTTL, ReportLease: opts.ReportLease, Sets: sets, HubURL: opts.ExternalURL,
	}
	if err := status.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	docs := &members.Documents{Reader: mgr.GetCache(), Store: store, Ready: make(chan struct{})}
	if err := docs.SetupWithManager(mgr); err != nil {
		return nil, err
	}

	r := newRouter(log.WithName("http"), registry, store, &api.Handler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Store: store, Namespace: opts.Namespace,
		Clock: clock.RealClock{}, Log: log.WithName("agent-api"), MaxBodyBytes: opts.MaxBodyBytes,
		Sets: publishedSets{sets}, PollTimeout: opts.LongPollTimeout, Writes: make(chan struct{}, opts.MaxConcurrentWrites),
	}, docs.Ready, opts.Profiling)

	tlsCfg, certs, caFile, err := serving(opts, log)
	if err != nil {
		return nil, err
	}
	if certs != nil {
		// Every replica serves, so every replica reloads (it needs no
		// leader).
		if err := mgr.Add(certs); err != nil {
			return nil, err
		}
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", opts.ListenAddress); err != nil {
			return nil, fmt.Errorf("listening on %s: %w", opts.ListenAddress, err)
		}
	}
	h := &Hub{Manager: mgr, Store: store, Sets: sets, Registry: registry, CAFile: caFile, Router: r, ln: ln,
		server: HTTPServer(r, tlsCfg, log.WithName("http-server"))}
	// Shutdown waits for active requests: waiting long polls answer 204 at
	// once instead of being cut after the grace period.
	h.server.RegisterOnShutdown(sets.Drain)
	if err := mgr.Add(serveRunnable(h, log)); err != nil {
		return nil, err
	}
	return h, nil
}

// newRouter is the hub's HTTP surface: the documents, the agent API,
// health and metrics; every 404, 405 and panic answered as a JSON error.
func newRouter(log logr.Logger, registry *prometheus.Registry, store *oidcbundle.Store, agentAPI *api.Handler, ready <-chan struct{}, profiling bool) chi.Router {
	r := chi.NewRouter()
	r.Use(Middleware(log, registry)...)
	r.NotFound(api.NotFound)
	r.MethodNotAllowed(api.MethodNotAllowed("method not allowed on this path; the Allow header lists the methods that are"))
	store.Routes(r)
	agentAPI.Routes(r)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	r.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
			_, _ = w.Write([]byte("ok"))
		default:
			http.Error(w, "documents not built yet", http.StatusServiceUnavailable)
		}
	})
	if profiling {
		r.Mount("/debug", middleware.Profiler())
	}
	r.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{crmetrics.Registry, registry}, promhttp.HandlerOpts{}))
	return r
}

// publishedSets gives the agent API the sequence each member's set is
// published at.
type publishedSets struct{ *members.BundleSets }

func (s publishedSets) Published(member string) int64 {
	e, _ := s.Current(member)
	return e.Sequence
}

// Start runs the hub until ctx ends.
func (h *Hub) Start(ctx context.Context) error { return h.Manager.Start(ctx) }

// Main runs the hub against the cluster of opts.Kubeconfig.
func Main(ctx context.Context, opts *Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	cfg, err := cmdutil.RESTConfig(opts.Kubeconfig)
	if err != nil {
		return err
	}
	h, err := New(ctx, opts, cfg, nil)
	if err != nil {
		return err
	}
	return h.Start(ctx)
}

// serveRunnable serves until ctx ends, then shuts the server down and
// returns only once the requests it held are answered (the drained long
// polls among them): the process exits right after the runnables return.
func serveRunnable(h *Hub, log logr.Logger) manager.Runnable {
	return cmdutil.EveryReplica(func(ctx context.Context) error {
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = h.server.Shutdown(shutdown)
		}()
		log.Info("serving", "address", h.ln.Addr().String())
		if err := h.server.ServeTLS(h.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving on %s: %w", h.ln.Addr(), err)
		}
		<-stopped // ServeTLS returns as soon as Shutdown starts
		return nil
	})
}

// bundleEndpointRoots: the system roots plus the operator's extra CAs; nil
// (the system roots) without a file.
func bundleEndpointRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading --bundle-endpoint-ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--bundle-endpoint-ca-file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// serving returns the TLS config: the operator's certificate, reloaded by
// the returned watcher when its files change (cert-manager renews them),
// or a self-signed development one whose certificate is written to a file
// for clients to trust.
func serving(opts *Options, log logr.Logger) (*tls.Config, *certwatcher.CertWatcher, string, error) {
	if opts.TLSCertFile != "" {
		certs, err := certwatcher.New(opts.TLSCertFile, opts.TLSKeyFile)
		if err != nil {
			return nil, nil, "", fmt.Errorf("loading --tls-cert-file/--tls-key-file: %w", err)
		}
		return &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}, certs, "", nil
	}
	u, _ := url.Parse(opts.ExternalURL)
	caFile := opts.DevCAFile
	if caFile == "" {
		caFile = filepath.Join(os.TempDir(), "anchorage-hub-ca.pem")
	}
	keyFile := caFile + ".key"
	// A restarted hub keeps its development certificate, as kube-apiserver
	// keeps the one in its --cert-dir: agents configured with the CA file
	// must not lose the hub.
	if cert, err := tls.LoadX509KeyPair(caFile, keyFile); err == nil && cert.Leaf != nil &&
		time.Now().Before(cert.Leaf.NotAfter) && cert.Leaf.VerifyHostname(u.Hostname()) == nil {
		log.Info("no --tls-cert-file: serving the development certificate made earlier", "caFile", caFile)
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil, caFile, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{Organization: []string{"anchorage"}, CommonName: "anchorage hub (development, self-signed)"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else {
		tmpl.DNSNames = append(tmpl.DNSNames, u.Hostname())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, "", fmt.Errorf("writing the development key to %s: %w", keyFile, err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, "", fmt.Errorf("writing the development CA to %s: %w", caFile, err)
	}
	log.Info("no --tls-cert-file: serving a self-signed development certificate; trust it with the CA file", "caFile", caFile)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, nil, caFile, nil
}
