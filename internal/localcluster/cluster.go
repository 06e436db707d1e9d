package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Client rate limits for every config this package hands out. client-go's
// defaults (5 QPS, burst 10) would make tests and benchmarks measure the client
// throttle instead of the apiserver.
const (
	clientQPS   = 2000
	clientBurst = 4000
)

// defaultStartTimeout is per process (etcd, then kube-apiserver). envtest's 20 s
// default is too short for a 170 MB apiserver bootstrapping RBAC on 2 busy cores.
const defaultStartTimeout = 2 * time.Minute

// Options configures one cluster.
type Options struct {
	// Name is used in logs, errors and the kubeconfig, e.g. "east".
	Name string
	// Issuer is --service-account-issuer. --api-audiences keeps its default
	// (the issuer), so tokens minted without audiences authenticate here.
	// "" = envtest's default, the apiserver's own URL.
	Issuer string
	// JWKSURI is --service-account-jwks-uri (optional; the apiserver derives
	// https://<its address>/openid/v1/jwks otherwise).
	JWKSURI string
	// ExtraArgs are more kube-apiserver flags, without the leading "--".
	ExtraArgs map[string]string
	// CRDs are extra CRD YAML (or JSON) documents to install; one entry may hold
	// several documents separated by "---". The mcs-api ServiceExport and
	// ServiceImport CRDs are always installed.
	CRDs [][]byte
	// Scheme for Cluster.Client; nil = DefaultScheme().
	Scheme *runtime.Scheme
	// DataDir is an etcd data folder kept across restarts; "" = a temporary
	// folder removed by Stop. The apiserver's certificates and service-account
	// keys are new on every start, so tokens do not survive a restart.
	DataDir string
	// StartTimeout bounds the start of each process; 0 = 2 minutes (or
	// $KUBEBUILDER_CONTROLPLANE_START_TIMEOUT).
	StartTimeout time.Duration
	// Output, when set, receives the apiserver's and etcd's logs.
	Output io.Writer
	// NodeAuthorization turns on what a real cluster applies to kubelets:
	// --authorization-mode=Node,RBAC and the NodeRestriction admission plugin.
	// Use NodeConfig for a kubelet's credentials. Off by default because a
	// node identity can then only touch its own node's objects.
	NodeAuthorization bool
}

// Cluster is a running kube-apiserver with its etcd.
type Cluster struct {
	// Name is Options.Name.
	Name string
	// Config authenticates as an admin (group system:masters) with a client
	// certificate; QPS and burst are raised.
	Config *rest.Config
	// Client is an uncached controller-runtime client with the cluster's scheme.
	Client client.Client
	// Clientset is client-go's typed clientset.
	Clientset kubernetes.Interface
	// Scheme is the scheme of Client.
	Scheme *runtime.Scheme

	issuer string
	env    *envtest.Environment
	tmp    string // certificates and temporary etcd data, removed by Stop

	stopOnce sync.Once
	stopErr  error
}

// DefaultScheme returns a new scheme with client-go's built-in types and the
// mcs-api v1alpha1 and v1beta1 types (ServiceExport, ServiceImport).
func DefaultScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("registering client-go types: %w", err)
	}
	if err := mcsv1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("registering mcs-api v1alpha1 types: %w", err)
	}
	// v1beta1 is the version the CRDs store and anchorage uses.
	if err := mcsv1beta1.Install(s); err != nil {
		return nil, fmt.Errorf("registering mcs-api v1beta1 types: %w", err)
	}
	return s, nil
}

// Start starts etcd and kube-apiserver on free loopback ports, installs the
// CRDs and returns when the API is usable (a few seconds). If anything fails
// half way, what was started is stopped before returning. ctx carries the
// logger; envtest cannot be interrupted once it starts a process, so a start is
// bounded by Options.StartTimeout rather than by ctx.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	name := opts.Name
	if name == "" {
		name = "cluster"
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting cluster %q: %w", name, err)
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("cluster", name)

	assets, err := AssetsDir()
	if err != nil {
		return nil, fmt.Errorf("starting cluster %q: %w", name, err)
	}
	scheme := opts.Scheme
	if scheme == nil {
		if scheme, err = DefaultScheme(); err != nil {
			return nil, fmt.Errorf("starting cluster %q: %w", name, err)
		}
	}
	crds, err := parseCRDs(append([][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD}, opts.CRDs...))
	if err != nil {
		return nil, fmt.Errorf("starting cluster %q: %w", name, err)
	}

	// Our own folder for the apiserver's certificates and (unless DataDir is
	// given) etcd's data. envtest would make temporary ones itself, but after
	// a failed attempt it retries in the same folders and then no longer
	// removes them, leaving keys in /tmp.
	tmp, err := os.MkdirTemp("", "localcluster-"+safeName(name)+"-")
	if err != nil {
		return nil, fmt.Errorf("starting cluster %q: %w", name, err)
	}
	certDir, etcdDir := filepath.Join(tmp, "apiserver"), filepath.Join(tmp, "etcd")
	if opts.DataDir != "" {
		etcdDir = opts.DataDir
	}
	for _, d := range []string{certDir, etcdDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			_ = os.RemoveAll(tmp)
			return nil, fmt.Errorf("starting cluster %q: %w", name, err)
		}
	}

	// Keep the tail of the apiserver's stderr: when it exits at start (a bad
	// flag, say) envtest only reports a timeout, and the reason is in there.
	apiserverErr := &tailBuffer{max: 8 << 10}
	apiserver := &envtest.APIServer{Err: apiserverErr, CertDir: certDir}
	etcd := &envtest.Etcd{DataDir: etcdDir}
	if opts.Output != nil {
		apiserver.Out = opts.Output
		apiserver.Err = io.MultiWriter(apiserverErr, opts.Output)
		etcd.Out, etcd.Err = opts.Output, opts.Output
	}
	args := apiserver.Configure()
	if opts.Issuer != "" {
		args.Set("service-account-issuer", opts.Issuer)
	}
	if opts.JWKSURI != "" {
		args.Set("service-account-jwks-uri", opts.JWKSURI)
	}
	if opts.NodeAuthorization {
		args.Set("authorization-mode", "Node,RBAC")
		// Added to the default set (which includes ClusterTrustBundleAttest).
		args.Set("enable-admission-plugins", "NodeRestriction")
	}
	for k, v := range opts.ExtraArgs {
		args.Set(strings.TrimPrefix(k, "--"), v)
	}

	startTimeout := opts.StartTimeout
	if startTimeout == 0 && os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		startTimeout = defaultStartTimeout
	}
	env := &envtest.Environment{
		ControlPlane:             envtest.ControlPlane{APIServer: apiserver, Etcd: etcd},
		BinaryAssetsDirectory:    assets,
		Scheme:                   scheme,
		CRDs:                     crds,
		ErrorIfCRDPathMissing:    false,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
		// Never pick up a developer's real cluster through $USE_EXISTING_CLUSTER.
		UseExistingCluster: ptr.To(false),
	}

	log.V(1).Info("starting etcd and kube-apiserver", "assets", assets, "issuer", opts.Issuer)
	began := time.Now()
	cfg, err := env.Start()
	if err != nil {
		// envtest stops etcd when the apiserver does not come up, but not
		// when a later step (CRDs, default namespace) fails.
		stopErr := errors.Join(env.Stop(), os.RemoveAll(tmp))
		var said string
		if tail := strings.TrimSpace(apiserverErr.String()); tail != "" {
			said = "\nkube-apiserver's last output:\n" + lastLines(tail, 15)
		}
		return nil, errors.Join(fmt.Errorf("starting cluster %q: %w%s", name, err, said), stopErr)
	}

	c := &Cluster{Name: name, Scheme: scheme, env: env, tmp: tmp}
	if err := c.init(cfg, opts.Issuer); err != nil {
		return nil, errors.Join(fmt.Errorf("starting cluster %q: %w", name, err), env.Stop(), os.RemoveAll(tmp))
	}
	log.Info("cluster started", "url", cfg.Host, "issuer", c.issuer, "took", time.Since(began).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) init(cfg *rest.Config, issuer string) error {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	c.Config = cfg
	var err error
	if c.Client, err = client.New(cfg, client.Options{Scheme: c.Scheme}); err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	if c.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("creating clientset: %w", err)
	}
	c.issuer = issuer
	if c.issuer == "" {
		// envtest's default, see controlplane.APIServer.defaultArgs.
		c.issuer = c.env.ControlPlane.APIServer.SecureServing.URL("https", "/").String()
	}
	return nil
}

// URL is the apiserver's https URL on loopback.
func (c *Cluster) URL() string { return c.Config.Host }

// Issuer is the service-account issuer the apiserver was started with.
func (c *Cluster) Issuer() string { return c.issuer }

// Stop stops the apiserver, then etcd, and removes temporary folders. It is
// idempotent; later calls return the first call's result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		// Only remove the files once the processes are gone.
		err := c.env.Stop()
		if err == nil {
			err = os.RemoveAll(c.tmp)
		}
		if err != nil {
			c.stopErr = fmt.Errorf("stopping cluster %q: %w", c.Name, err)
		}
	})
	return c.stopErr
}

// UserConfig returns a rest.Config that authenticates as the given user and
// groups with a client certificate (system:authenticated is added by the
// apiserver). QPS and burst are raised.
func (c *Cluster) UserConfig(user string, groups ...string) (*rest.Config, error) {
	u, err := c.env.AddUser(envtest.User{Name: user, Groups: groups}, &rest.Config{QPS: clientQPS, Burst: clientBurst})
	if err != nil {
		return nil, fmt.Errorf("provisioning user %q in cluster %q: %w", user, c.Name, err)
	}
	return u.Config(), nil
}

// NodeConfig returns a kubelet's credentials for nodeName: user
// system:node:<nodeName> in group system:nodes. They are only useful with
// Options.NodeAuthorization (RBAC alone grants nodes nothing).
func (c *Cluster) NodeConfig(nodeName string) (*rest.Config, error) {
	return c.UserConfig("system:node:"+nodeName, "system:nodes")
}

// WriteKubeconfig writes an admin kubeconfig with the CA and client certificate
// embedded, named after the cluster, so kubectl works against it.
func (c *Cluster) WriteKubeconfig(path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[c.Name] = &clientcmdapi.Cluster{
		Server:                   c.Config.Host,
		CertificateAuthorityData: c.Config.CAData,
	}
	kc.AuthInfos[c.Name+"-admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: c.Config.CertData,
		ClientKeyData:         c.Config.KeyData,
	}
	kc.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: c.Name + "-admin"}
	kc.CurrentContext = c.Name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig for cluster %q to %s: %w", c.Name, path, err)
	}
	return nil
}

// parseCRDs decodes CRD documents (YAML or JSON, several per entry allowed).
func parseCRDs(docs [][]byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for i, doc := range docs {
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(doc), 4096)
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := dec.Decode(crd); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("decoding CRD document %d: %w", i, err)
			}
			if crd.Name == "" && crd.Kind == "" {
				continue // an empty document between "---" separators
			}
			if crd.Kind != "CustomResourceDefinition" || crd.Name == "" {
				return nil, fmt.Errorf("CRD document %d holds a %s %q, not a named CustomResourceDefinition", i, crd.Kind, crd.Name)
			}
			out = append(out, crd)
		}
	}
	return out, nil
}

// safeName turns a cluster (or test) name into something usable in a file name.
func safeName(name string) string {
	b := []byte(name)
	for i, ch := range b {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// lastLines returns the last n distinct lines of s: envtest retries a failed
// start, so the same complaint is usually there several times.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	seen := map[string]bool{}
	var out []string
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		l := strings.TrimRight(lines[i], " \r")
		if l == "" || seen[l] {
			continue
		}
		seen[l] = true
		out = append(out, "  "+l)
	}
	slices.Reverse(out)
	return strings.Join(out, "\n")
}
