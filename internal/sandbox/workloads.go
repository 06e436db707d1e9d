package sandbox

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// The demo's workloads: a server pod behind an exported Service in one
// member, a client pod in the other.
const (
	demoNamespace     = "demo"
	demoService       = "echo"
	demoServerPod     = "echo-0"
	demoServerAccount = "server"
	demoClientPod     = "client-0"
	demoClientAccount = "client"
)

// Projected volumes and files of the demo pods. File names follow the
// SPIFFE filesystem-delivery draft (pkg/workload's names).
const (
	identityVolume   = "identity"
	serviceDNSVolume = "service-dns"
	// clustersetFile holds the clusterset's service-dns anchors.
	clustersetFile = "clusterset.service-dns-trust-bundle.pem"
)

// refreshScale compresses the kubelet's wait for beginRefreshAt: the 12 h
// of a 24 h certificate become about 4 s, so a rotated CA reaches the
// server's certificate within seconds.
const refreshScale = 1.0 / 10000

// trustBundleLag is how long the kubelet simulators take to rewrite pods'
// trust bundle files after a ClusterTrustBundle changes: 1 to 1.5 s, a real
// kubelet's next pod sync (up to about 90 s) compressed. The agents'
// promotion delay (cmd/sandbox) must exceed it, or the rotation breaks
// traffic.
const (
	trustBundleLag       = time.Second
	trustBundleLagJitter = 0.5
)

// ioTimeout bounds each dial, handshake and line exchange: a stuck peer
// turns into a counted failure instead of a hang.
const ioTimeout = 5 * time.Second

// demoSPIFFEID is the X509-SVID identity of a pod running as serviceAccount
// in the demo namespace.
func demoSPIFFEID(td spiffeid.TrustDomain, serviceAccount string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", demoNamespace, "sa", serviceAccount)
}

// clustersetName is the MCS name of the demo Service.
func clustersetName() string {
	return demoService + "." + demoNamespace + ".svc." + signers.ClustersetDomain
}

// startKubelet runs a simulated node in m's cluster, with the node's own
// credentials when the apiserver enforces them. The caller stops it.
func startKubelet(ctx context.Context, m *Member, dir string) (*kubeletsim.Sim, error) {
	opts := kubeletsim.Options{
		NodeName:     m.Name + "-node-1",
		Dir:          filepath.Join(dir, m.Name, "kubelet"),
		RefreshAfter: kubeletsim.TimeScale(refreshScale),
		Log:          logr.FromContextOrDiscard(ctx).WithName(m.Name + "-kubelet"),

		TrustBundleRefreshDelay:  trustBundleLag,
		TrustBundleRefreshJitter: trustBundleLagJitter,
	}
	if m.nodeAuthorization {
		cfg, err := m.Cluster.NodeConfig(opts.NodeName)
		if err != nil {
			return nil, err
		}
		opts.NodeConfig = cfg
	}
	sim, err := kubeletsim.New(m.Cluster.Config, opts)
	if err != nil {
		return nil, err
	}
	if err := sim.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting the kubelet simulator of %s: %w", m.Name, err)
	}
	return sim, nil
}

// podCertificate projects a credential bundle of signer (key first, then
// the chain) under the draft's file name.
func podCertificate(signer string) corev1.VolumeProjection {
	return corev1.VolumeProjection{PodCertificate: &corev1.PodCertificateProjection{
		SignerName:           signer,
		KeyType:              string(signers.KeyTypeECDSAP256),
		CredentialBundlePath: workload.CredentialBundleFileName,
	}}
}

// peerTrustBundle selects the SPIFFE anchors of one peer trust domain, as
// the filesystem-delivery draft labels them.
func peerTrustBundle(td spiffeid.TrustDomain) corev1.VolumeProjection {
	return kubeletsim.TrustBundleSource(signers.SPIFFESignerName,
		&metav1.LabelSelector{MatchLabels: map[string]string{federation.LabelPeerTrustDomain: td.Name()}},
		workload.TrustBundleFileName(td))
}

func projected(name string, sources ...corev1.VolumeProjection) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}}}
}

// serverPodSpec is the echo server: its SPIFFE credential with the client trust
// domain's anchors, and its service-dns credential in a volume of its own
// (one workload.Source per credential).
func serverPodSpec(peer spiffeid.TrustDomain) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: demoNamespace, Name: demoServerPod, Labels: map[string]string{"app": demoService}},
		Spec: corev1.PodSpec{
			ServiceAccountName: demoServerAccount,
			Volumes: []corev1.Volume{
				projected(identityVolume, podCertificate(signers.SPIFFESignerName), peerTrustBundle(peer)),
				projected(serviceDNSVolume, podCertificate(signers.ServiceDNSSignerName)),
			},
		},
	}
}

// clientPodSpec is the client: its SPIFFE credential, the server trust
// domain's anchors, and the clusterset's service-dns anchors by name.
func clientPodSpec(peer spiffeid.TrustDomain) *corev1.Pod {
	clusterset := corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{
		Name: ptr.To(federation.ClustersetBundleName()),
		Path: clustersetFile,
	}}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: demoNamespace, Name: demoClientPod, Labels: map[string]string{"app": demoClientPod}},
		Spec: corev1.PodSpec{
			ServiceAccountName: demoClientAccount,
			Volumes:            []corev1.Volume{projected(identityVolume, podCertificate(signers.SPIFFESignerName), peerTrustBundle(peer), clusterset)},
		},
	}
}

// exportService creates the demo namespace, the Service selecting the
// server pod and its ServiceExport, before the pod exists so that its
// service-dns request is issued at once with the clusterset name.
func exportService(ctx context.Context, m *Member) error {
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: demoNamespace}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: demoNamespace, Name: demoService},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": demoService},
				Ports:    []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)}},
			},
		},
		&mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: demoNamespace, Name: demoService}},
	} {
		if err := m.Cluster.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s in %s: %w", obj, client.ObjectKeyFromObject(obj), m.Name, err)
		}
	}
	return nil
}

// echoServer is the server pod's process: a TLS listener on loopback that
// answers every line with "<name>: <line>".
type echoServer struct {
	name string
	ln   net.Listener
	cfg  *tls.Config
	log  logr.Logger
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	// failed counts handshakes that failed, lastErr says why the last did;
	// lastPeer is the SPIFFE ID of the last client accepted.
	failed   int
	lastErr  error
	lastPeer string
}

// startEchoServer listens on 127.0.0.1:0; Close stops it and every
// connection.
func startEchoServer(ctx context.Context, name string, cfg *tls.Config) (*echoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback for %s: %w", name, err)
	}
	s := &echoServer{name: name, ln: ln, cfg: cfg, conns: map[net.Conn]struct{}{}, log: logr.FromContextOrDiscard(ctx).WithValues("server", name, "addr", ln.Addr().String())}
	s.wg.Go(func() { s.accept(ctx) })
	return s, nil
}

// Addr is where the server listens.
func (s *echoServer) Addr() string { return s.ln.Addr().String() }

// Close stops accepting, closes open connections and waits for their
// handlers.
func (s *echoServer) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}

func (s *echoServer) accept(ctx context.Context) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				_ = c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			s.serve(ctx, c)
		})
	}
}

func (s *echoServer) serve(ctx context.Context, c net.Conn) {
	tc := tls.Server(c, s.cfg)
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	hctx, cancel := context.WithTimeout(ctx, ioTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.mu.Lock()
		s.failed++
		s.lastErr = err
		s.mu.Unlock()
		s.log.Error(err, "TLS handshake failed")
		return
	}
	_ = tc.SetDeadline(time.Time{}) // a long-lived connection may idle
	cs := tc.ConnectionState()
	s.mu.Lock()
	s.lastPeer = peerName(cs)
	s.mu.Unlock()
	r := bufio.NewScanner(tc)
	for r.Scan() {
		if _, err := fmt.Fprintf(tc, "%s: %s\n", s.name, r.Text()); err != nil {
			return
		}
	}
}

// serverStats is what a server saw.
type serverStats struct {
	failed   int
	lastErr  error
	lastPeer string
}

func (s *echoServer) stats() serverStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return serverStats{failed: s.failed, lastErr: s.lastErr, lastPeer: s.lastPeer}
}

// peerName is the SPIFFE ID of the peer's X509-SVID, "" without one.
func peerName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return ""
	}
	return id.String()
}

// echoConn is a client connection to an echoServer.
type echoConn struct {
	*tls.Conn
	r *bufio.Reader
}

// dialEcho connects to addr and completes the TLS handshake.
func dialEcho(ctx context.Context, addr string, cfg *tls.Config) (*echoConn, error) {
	ctx, cancel := context.WithTimeout(ctx, ioTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	return &echoConn{Conn: tc, r: bufio.NewReader(tc)}, nil
}

// say sends one line and returns the server's answer. In TLS 1.3 the
// server checks the client's certificate after the client's handshake
// returns, so only an answer proves that both sides accepted each other.
func (c *echoConn) say(line string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return "", fmt.Errorf("sending: %w", err)
	}
	answer, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	return strings.TrimSuffix(answer, "\n"), nil
}

// exchange is one short-lived connection: dial, handshake, one line each
// way, close. It returns the answer and the server's certificates.
func exchange(ctx context.Context, addr string, cfg *tls.Config, line string) (string, tls.ConnectionState, error) {
	c, err := dialEcho(ctx, addr, cfg)
	if err != nil {
		return "", tls.ConnectionState{}, err
	}
	defer c.Close()
	answer, err := c.say(line)
	if err != nil {
		return "", tls.ConnectionState{}, err
	}
	if !strings.HasSuffix(answer, ": "+line) {
		return "", tls.ConnectionState{}, fmt.Errorf("the server answered %q, not an echo of %q", answer, line)
	}
	return answer, c.ConnectionState(), nil
}
