package sandbox

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	certsv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// Progress prints the sandbox's steps ("==> ...") and the details under
// them.
type Progress struct{ Out io.Writer }

// Step prints a step.
func (p Progress) Step(format string, args ...any) { fmt.Fprintf(p.Out, "==> "+format+"\n", args...) }

// Detail prints a line under a step.
func (p Progress) Detail(format string, args ...any) { fmt.Fprintf(p.Out, "    "+format+"\n", args...) }

// DemoOptions configures RunDemo.
type DemoOptions struct {
	// Dir holds the kubelet simulators' files (<Dir>/<member>/kubelet);
	// "" = a temporary folder removed at the end.
	Dir string
	// Out receives the progress and the closing summary; nil discards.
	Out io.Writer
}

// DemoResult is what the demo saw, for the summary and for tests.
type DemoResult struct {
	ClientCluster, ServerCluster string
	// ClientID and ServerID are the SPIFFE IDs in the pods' own
	// certificates.
	ClientID, ServerID string
	// ServerSawClient is the client's SPIFFE ID as the server verified it,
	// ClientSawServer the server's as the client verified it.
	ServerSawClient, ClientSawServer string
	// Answer is the server's echo over SPIFFE mTLS.
	Answer string
	// DNSName is the clusterset name the client verified the server's
	// service-dns certificate against; DNSNames all the names in it.
	DNSName   string
	DNSNames  []string
	DNSAnswer string
	Rotation  RotationResult
}

// RunDemo is the sandbox's closing demo. A client pod in clientMember and a
// server pod in serverMember, run by kubelet simulators, get their
// certificates and the federated trust bundles the hub pushed; the client
// talks to the server over SPIFFE mTLS and over TLS verified by the
// clusterset DNS name; then the server's SPIFFE CA rotates while the client
// keeps connecting. The members must federate with each other's trust
// domain and be in the clusterset.
//
// It returns an error when any exchange fails, with what it saw until
// then; everything it starts is stopped when it returns.
func RunDemo(ctx context.Context, clientMember, serverMember *Member, o DemoOptions) (*DemoResult, error) {
	d := &demo{p: Progress{Out: o.Out}, client: clientMember, server: serverMember, dir: o.Dir}
	if d.p.Out == nil {
		d.p.Out = io.Discard
	}
	d.res = &DemoResult{ClientCluster: clientMember.Name, ServerCluster: serverMember.Name, DNSName: clustersetName()}
	defer d.stop()
	ctx = logr.NewContext(ctx, logr.FromContextOrDiscard(ctx).WithName("demo"))
	for _, step := range []func(context.Context) error{d.trustDomains, d.federated, d.runPods, d.openSources, d.listen, d.mtls, d.serviceDNS, d.rotate} {
		if err := step(ctx); err != nil {
			return d.res, err
		}
	}
	d.res.summarize(d.p)
	return d.res, nil
}

// demo is one run of RunDemo: its steps fill res and register what they
// start in stops.
type demo struct {
	p                  Progress
	client, server     *Member
	clientTD, serverTD spiffeid.TrustDomain
	dir                string
	res                *DemoResult
	stops              []func()

	serverPod, clientPod    *kubeletsim.Pod
	serverSPIFFE, serverDNS *workload.Source
	clientSrc               *workload.Source
	mtlsServer, dnsServer   *echoServer
	// clientConfig is the client's SPIFFE mTLS configuration, authorizing
	// only the server's SPIFFE ID.
	clientConfig *tls.Config
}

// stop stops everything the steps started, last first.
func (d *demo) stop() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
	d.stops = nil
}

func (d *demo) trustDomains(context.Context) error {
	var err error
	if d.clientTD, err = spiffeid.TrustDomainFromString(d.client.TrustDomain); err != nil {
		return fmt.Errorf("trust domain of %s: %w", d.client.Name, err)
	}
	if d.serverTD, err = spiffeid.TrustDomainFromString(d.server.TrustDomain); err != nil {
		return fmt.Errorf("trust domain of %s: %w", d.server.Name, err)
	}
	return nil
}

// federated waits for the bundles the pods project: each member's bundle
// of the other's trust domain, and the clusterset bundle.
func (d *demo) federated(ctx context.Context) error {
	d.p.Step("federated trust bundles pushed by the hub")
	for _, m := range []struct {
		member *Member
		peer   string
	}{{d.client, d.server.TrustDomain}, {d.server, d.client.TrustDomain}} {
		line, err := waitFederated(ctx, m.member, m.peer)
		if err != nil {
			return err
		}
		d.p.Detail("%s", line)
	}
	return nil
}

// runPods starts a kubelet simulator in each member, exports the server's
// Service and runs both pods until their volumes are written.
func (d *demo) runPods(ctx context.Context) error {
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "anchorage-demo-")
		if err != nil {
			return err
		}
		d.dir = dir
		d.stops = append(d.stops, func() { _ = os.RemoveAll(dir) })
	}
	d.p.Step("demo pods, run by a kubelet simulator in each member (certificate refresh compressed %.0fx: every ~%s instead of every 12h)",
		1/refreshScale, time.Duration(float64(12*time.Hour)*refreshScale).Round(100*time.Millisecond))
	serverSim, err := startKubelet(ctx, d.server, d.dir)
	if err != nil {
		return err
	}
	d.stops = append(d.stops, serverSim.Stop)
	clientSim, err := startKubelet(ctx, d.client, d.dir)
	if err != nil {
		return err
	}
	d.stops = append(d.stops, clientSim.Stop)
	if err := exportService(ctx, d.server); err != nil {
		return err
	}
	d.p.Detail("%s: Service %s/%s selects app=%s and is exported (ServiceExport %s/%s)", d.server.Name, demoNamespace, demoService, demoService, demoNamespace, demoService)
	if d.serverPod, err = serverSim.RunPod(ctx, serverPodSpec(d.clientTD)); err != nil {
		return err
	}
	if d.clientPod, err = clientSim.RunPod(ctx, clientPodSpec(d.serverTD)); err != nil {
		return err
	}
	if err := waitIssued(ctx, d.server, d.serverPod); err != nil {
		return err
	}
	return waitIssued(ctx, d.client, d.clientPod)
}

// openSources starts the pods' processes' view of their files:
// pkg/workload reads the projected files and reloads them when the
// kubelet swaps them.
func (d *demo) openSources(ctx context.Context) error {
	serverDir, serverDNSDir, clientDir := d.serverPod.VolumeDir(identityVolume), d.serverPod.VolumeDir(serviceDNSVolume), d.clientPod.VolumeDir(identityVolume)
	var err error
	if d.serverSPIFFE, err = d.newSource(ctx, demoServerPod, workload.Options{
		CredentialBundleFile: filepath.Join(serverDir, workload.CredentialBundleFileName),
		TrustBundleFiles:     map[spiffeid.TrustDomain]string{d.clientTD: filepath.Join(serverDir, workload.TrustBundleFileName(d.clientTD))},
	}); err != nil {
		return err
	}
	if d.serverDNS, err = d.newSource(ctx, demoServerPod, workload.Options{
		CredentialBundleFile: filepath.Join(serverDNSDir, workload.CredentialBundleFileName),
	}); err != nil {
		return err
	}
	if d.clientSrc, err = d.newSource(ctx, demoClientPod, workload.Options{
		CredentialBundleFile:          filepath.Join(clientDir, workload.CredentialBundleFileName),
		TrustBundleFiles:              map[spiffeid.TrustDomain]string{d.serverTD: filepath.Join(clientDir, workload.TrustBundleFileName(d.serverTD))},
		ClustersetDNSTrustBundleFiles: []string{filepath.Join(clientDir, clustersetFile)},
	}); err != nil {
		return err
	}
	if d.res.ServerID, err = svidID(d.serverSPIFFE); err != nil {
		return err
	}
	if d.res.ClientID, err = svidID(d.clientSrc); err != nil {
		return err
	}
	if err := waitDNSName(ctx, d.server, d.serverDNS, d.res.DNSName); err != nil {
		return err
	}
	d.p.Detail("%s: pod %s/%s (ServiceAccount %s) is %s; service-dns names %s; trusts %s",
		d.server.Name, demoNamespace, demoServerPod, demoServerAccount, d.res.ServerID, strings.Join(d.serverDNS.Certificate().Leaf.DNSNames, ", "), d.clientTD.Name())
	d.p.Detail("%s: pod %s/%s (ServiceAccount %s) is %s; trusts %s and the clusterset's service-dns anchors",
		d.client.Name, demoNamespace, demoClientPod, demoClientAccount, d.res.ClientID, d.serverTD.Name())
	return nil
}

func (d *demo) newSource(ctx context.Context, pod string, opts workload.Options) (*workload.Source, error) {
	opts.Logger = logr.FromContextOrDiscard(ctx).WithName(pod)
	src, err := workload.New(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", pod, err)
	}
	d.stops = append(d.stops, func() { _ = src.Close() })
	return src, nil
}

// listen starts the server pod's two listeners: SPIFFE mTLS admitting only
// the client's SPIFFE ID, and TLS with its service-dns certificate.
func (d *demo) listen(ctx context.Context) error {
	var err error
	wantClient := demoSPIFFEID(d.clientTD, demoClientAccount)
	if d.mtlsServer, err = startEchoServer(ctx, demoServerPod, d.serverSPIFFE.ServerConfig(tlsconfig.AuthorizeID(wantClient))); err != nil {
		return err
	}
	d.stops = append(d.stops, d.mtlsServer.Close)
	if d.dnsServer, err = startEchoServer(ctx, demoServerPod, d.serverDNS.DNSServerConfig()); err != nil {
		return err
	}
	d.stops = append(d.stops, d.dnsServer.Close)
	d.clientConfig = d.clientSrc.ClientConfig(tlsconfig.AuthorizeID(demoSPIFFEID(d.serverTD, demoServerAccount)))
	return nil
}

// mtls: one exchange over SPIFFE mTLS, each side verifying the other.
func (d *demo) mtls(ctx context.Context) error {
	d.p.Step("SPIFFE mTLS: %s (%s) connects to %s (%s) on %s", demoClientPod, d.client.Name, demoServerPod, d.server.Name, d.mtlsServer.Addr())
	hello := "hello from " + demoClientPod
	answer, cs, err := exchange(ctx, d.mtlsServer.Addr(), d.clientConfig, hello)
	if err != nil {
		return fmt.Errorf("SPIFFE mTLS from %s to %s failed: %w; the server says: %v", d.client.Name, d.server.Name, err, d.mtlsServer.stats().lastErr)
	}
	d.res.Answer, d.res.ClientSawServer, d.res.ServerSawClient = answer, peerName(cs), d.mtlsServer.stats().lastPeer
	d.p.Detail("%s verified the server as %s; %s verified the client as %s", demoClientPod, d.res.ClientSawServer, demoServerPod, d.res.ServerSawClient)
	d.p.Detail("sent %q, got back %q", hello, answer)
	return nil
}

// serviceDNS: one exchange with the server's service-dns certificate,
// verified by its clusterset name against the clusterset bundle.
func (d *demo) serviceDNS(ctx context.Context) error {
	name := d.res.DNSName
	d.p.Step("service DNS: %s connects to %s's second listener as %s on %s", demoClientPod, demoServerPod, name, d.dnsServer.Addr())
	hello := "hello " + name
	answer, cs, err := exchange(ctx, d.dnsServer.Addr(), d.clientSrc.DNSClientConfig(name), hello)
	if err != nil {
		return fmt.Errorf("TLS to %s failed: %w; the server says: %v", name, err, d.dnsServer.stats().lastErr)
	}
	d.res.DNSAnswer, d.res.DNSNames = answer, cs.PeerCertificates[0].DNSNames
	d.p.Detail("%s verified the server's certificate for %s against the clusterset bundle (%s)", demoClientPod, name, federation.ClustersetBundleName())
	d.p.Detail("sent %q, got back %q", hello, answer)
	return nil
}

func (d *demo) rotate(ctx context.Context) error {
	var err error
	d.res.Rotation, err = rotateUnderTraffic(ctx, d.p, d.server, d.client, d.mtlsServer, d.clientConfig)
	return err
}

// summarize says in plain words what the demo showed.
func (r *DemoResult) summarize(p Progress) {
	rot := r.Rotation
	p.Step("what happened")
	p.Detail("mTLS across clusters: %s in %s and %s in %s each verified the other's X509-SVID against the peer trust domain's bundle that the hub pushed:",
		demoClientPod, r.ClientCluster, demoServerPod, r.ServerCluster)
	p.Detail("  the server saw %s, the client saw %s.", r.ServerSawClient, r.ClientSawServer)
	p.Detail("clusterset name: %s served %s with its service-dns certificate, and %s verified it with the clusterset bundle.", demoServerPod, r.DNSName, demoClientPod)
	p.Detail("rotation: %s, %s, the long-lived connection stayed up (%s); %s's SPIFFE CA %s → %s",
		count(rot.Handshakes, "handshake"), count(rot.Failures, "failure"), count(rot.LongLivedExchanges, "exchange"), r.ServerCluster, rot.OldCA, rot.NewCA)
	p.Detail("  (promoted %s after the request, once %s had applied it; %s presented a leaf of the new CA after %s).",
		seconds(rot.Promoted), r.ClientCluster, demoServerPod, seconds(rot.NewLeaf))
}

// waitFederated waits until m holds the hub's bundle of the peer trust
// domain and the clusterset bundle, and describes them.
func waitFederated(ctx context.Context, m *Member, peer string) (string, error) {
	names := []string{federation.TrustDomainBundleName(peer), federation.ClustersetBundleName()}
	var parts []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		parts = parts[:0]
		for _, name := range names {
			var ctb certsv1.ClusterTrustBundle
			if err := m.Cluster.Client.Get(ctx, client.ObjectKey{Name: name}, &ctb); err != nil {
				return false, nil
			}
			certs, err := signers.ParseCertificatesPEM([]byte(ctb.Spec.TrustBundle))
			if err != nil {
				return false, nil
			}
			parts = append(parts, fmt.Sprintf("%s (%s)", name, count(len(certs), "anchor")))
		}
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for the hub to push %s to %s: %w; its MemberCluster must federate with %s (spec.federatesWith) and be in the clusterset (spec.clusterSet)",
			strings.Join(names, " and "), m.Name, err, peer)
	}
	return fmt.Sprintf("%s holds %s", m.Name, strings.Join(parts, " and ")), nil
}

func waitIssued(ctx context.Context, m *Member, p *kubeletsim.Pod) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := p.WaitIssued(ctx); err != nil {
		return fmt.Errorf("%s: waiting for the certificates and trust bundles of its demo pod: %w (the agent's log says why a request is pending)", m.Name, err)
	}
	return nil
}

func svidID(src *workload.Source) (string, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return "", err
	}
	return svid.ID.String(), nil
}

// waitDNSName waits until the service-dns certificate holds name: the
// agent adds clusterset names only once the hub said the cluster is in the
// clusterset, and the next refresh brings them.
func waitDNSName(ctx context.Context, m *Member, src *workload.Source, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return slices.Contains(src.Certificate().Leaf.DNSNames, name), nil
	})
	if err != nil {
		return fmt.Errorf("the service-dns certificate of %s/%s in %s lacks %s (it has %v): %w; %s must be in the clusterset (MemberCluster spec.clusterSet) and ServiceExport %s/%s valid",
			demoNamespace, demoServerPod, m.Name, name, src.Certificate().Leaf.DNSNames, err, m.Name, demoNamespace, demoService)
	}
	return nil
}

// count says "1 anchor", "2 anchors".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// seconds prints a duration the way the demo's timings read best: "2.3s".
func seconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
