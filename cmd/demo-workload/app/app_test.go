package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/cmd/demo-workload/app"
	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload"
	"github.com/anchorage-dev/anchorage/pkg/workload/workloadtest"
)

var (
	east = spiffeid.RequireTrustDomainFromString("east.anchorage.test")
	west = spiffeid.RequireTrustDomainFromString("west.anchorage.test")

	clientID = spiffeid.RequireFromSegments(east, "ns", "demo", "sa", "client")
	serverID = spiffeid.RequireFromSegments(west, "ns", "demo", "sa", "server")
)

const clustersetName = "echo.demo.svc." + signers.ClustersetDomain

// --- certificates from pkg/signers, written as the kubelet projects them ---

// federation is two members' CAs: east runs the client, west the server.
type federation struct {
	eastSPIFFE, westSPIFFE, westDNS *workloadtest.CA
}

func newFederation(t *testing.T) *federation {
	return &federation{eastSPIFFE: workloadtest.NewSPIFFECA(t, east, "east"), westSPIFFE: workloadtest.NewSPIFFECA(t, west, "west"), westDNS: workloadtest.NewServiceDNSCA(t, "west")}
}

// serverDir is the server pod's projected volume in west: its X509-SVID,
// east's SPIFFE bundle and its service-dns certificate.
func (f *federation) serverDir(t *testing.T) string {
	return writeDir(t, map[string][]byte{
		app.SPIFFECredentialFile:           f.westSPIFFE.Issue(t, workloadtest.SPIFFELeaf(t, west, "demo", "server")).Bundle(),
		workload.TrustBundleFileName(east): f.eastSPIFFE.AnchorPEM(),
		app.ServiceDNSCredentialFile:       f.westDNS.Issue(t, workloadtest.ServiceDNSLeaf(t, "echo.demo.svc", "echo.demo.svc.cluster.local", clustersetName)).Bundle(),
	})
}

// clientDir is the client pod's projected volume in east: its X509-SVID,
// west's SPIFFE bundle and the clusterset's service-dns anchors.
func (f *federation) clientDir(t *testing.T) string {
	return writeDir(t, map[string][]byte{
		app.SPIFFECredentialFile:           f.eastSPIFFE.Issue(t, workloadtest.SPIFFELeaf(t, east, "demo", "client")).Bundle(),
		workload.TrustBundleFileName(west): f.westSPIFFE.AnchorPEM(),
		app.ClustersetTrustBundleFile:      f.westDNS.AnchorPEM(),
	})
}

func writeDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// --- running the binary's modes ---

// logs collects what a component logs, and shows it in the test's output.
type logs struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func newLogs(t *testing.T) *logs { return &logs{t: t} }

func (l *logs) ctx(t *testing.T) context.Context {
	log := funcr.New(func(prefix, args string) {
		line := prefix + " " + args
		l.mu.Lock()
		l.lines = append(l.lines, line)
		l.mu.Unlock()
		l.t.Log(line)
	}, funcr.Options{})
	return logr.NewContext(t.Context(), log)
}

// has reports whether one line holds every part.
func (l *logs) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// parse builds Options from command-line arguments, as the pod runs the
// binary, and validates them.
func parse(t *testing.T, args ...string) *app.Options {
	t.Helper()
	opts := app.NewOptions()
	fs := pflag.NewFlagSet("demo-workload", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := opts.Validate(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return opts
}

func startServer(t *testing.T, l *logs, dir string, args ...string) *app.Server {
	t.Helper()
	opts := parse(t, append([]string{"--mode=server", "--name=echo-0", "--credentials-dir=" + dir,
		"--listen-address=127.0.0.1:0", "--dns-listen-address=127.0.0.1:0", "--health-address=0"}, args...)...)
	s, err := app.StartServer(l.ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, l *logs, s *app.Server, dir string, args ...string) *app.Client {
	t.Helper()
	_, dnsPort, _ := strings.Cut(s.DNSAddr().String(), ":")
	opts := parse(t, append([]string{"--mode=client", "--name=client-0", "--credentials-dir=" + dir,
		"--server-address=" + s.SPIFFEAddr().String(),
		// Dialed by address, verified by the clusterset name, as a client
		// reaching another cluster's node port does.
		"--dns-server-address=127.0.0.1:" + dnsPort, "--dns-server-name=" + clustersetName,
		"--health-address=0", "--count=1"}, args...)...)
	c, err := app.NewClient(l.ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A client in east and a server in west: SPIFFE mTLS with each side
// checking the other's ID, and TLS verified by the clusterset name.
func TestExchanges(t *testing.T) {
	f := newFederation(t)
	serverLogs, clientLogs := newLogs(t), newLogs(t)
	s := startServer(t, serverLogs, f.serverDir(t), "--allow-spiffe-id="+clientID.String())
	c := newClient(t, clientLogs, s, f.clientDir(t), "--expect-spiffe-id="+serverID.String())

	if err := s.Healthy(); err != nil {
		t.Errorf("server not healthy: %v", err)
	}
	if err := c.Healthy(); err != nil {
		t.Errorf("client not healthy: %v", err)
	}

	exs := c.Round(t.Context())
	if len(exs) != 2 {
		t.Fatalf("%d exchanges, want 2: %+v", len(exs), exs)
	}
	for _, ex := range exs {
		if ex.Err != nil {
			t.Fatalf("%s to %s: %v", ex.Over, ex.Address, ex.Err)
		}
	}
	mtls, dns := exs[0], exs[1]
	if mtls.Server != serverID.String() || !strings.Contains(mtls.Answer, clientID.String()) || !strings.Contains(mtls.Answer, serverID.String()) {
		t.Errorf("SPIFFE mTLS: verified %q, answer %q", mtls.Server, mtls.Answer)
	}
	if dns.Server != clustersetName || !strings.Contains(dns.Answer, "as "+clustersetName) {
		t.Errorf("service-dns: verified %q, answer %q", dns.Server, dns.Answer)
	}
	if !serverLogs.has("Exchange over SPIFFE mTLS", clientID.String()) || !serverLogs.has("Exchange over TLS with the service-dns certificate", clustersetName) {
		t.Error("the server did not log the exchanges with the client's identity")
	}
	if !clientLogs.has(`"msg"="Exchange"`, serverID.String()) {
		t.Error("the client did not log the exchange with the server's identity")
	}
	if err := c.Run(t.Context()); err != nil {
		t.Errorf("Run --count=1: %v", err)
	}

	// A trust domain allowed as a whole admits the client too.
	s2 := startServer(t, newLogs(t), f.serverDir(t), "--allow-trust-domain="+east.Name())
	c2 := newClient(t, newLogs(t), s2, f.clientDir(t), "--expect-trust-domain="+west.Name())
	for _, ex := range c2.Round(t.Context()) {
		if ex.Err != nil {
			t.Errorf("trust-domain authorization, %s: %v", ex.Over, ex.Err)
		}
	}
}

// Peers that are not the ones expected are refused, and the refusing side
// says who was refused and why.
func TestRefusals(t *testing.T) {
	f := newFederation(t)
	other := func(td spiffeid.TrustDomain) string {
		return spiffeid.RequireFromSegments(td, "ns", "demo", "sa", "other").String()
	}

	t.Run("server refuses a client ID it does not allow", func(t *testing.T) {
		serverLogs := newLogs(t)
		s := startServer(t, serverLogs, f.serverDir(t), "--allow-spiffe-id="+other(east))
		c := newClient(t, newLogs(t), s, f.clientDir(t), "--expect-spiffe-id="+serverID.String())
		ex := c.Round(t.Context())[0]
		if ex.Err == nil {
			t.Fatalf("the server admitted %s: %q", clientID, ex.Answer)
		}
		if !serverLogs.has("Refused a client over SPIFFE mTLS", clientID.String(), "is not allowed", "--allow-spiffe-id") {
			t.Error("the server did not log the refusal with the client's ID and the flag to change")
		}
		err := c.Run(t.Context())
		if err == nil || !strings.Contains(err.Error(), "1 of 2 exchanges failed") {
			t.Errorf("Run --count=1: %v, want 1 of 2 exchanges failed", err)
		}
	})
	t.Run("client refuses a server ID it does not expect", func(t *testing.T) {
		s := startServer(t, newLogs(t), f.serverDir(t), "--allow-spiffe-id="+clientID.String())
		clientLogs := newLogs(t)
		c := newClient(t, clientLogs, s, f.clientDir(t), "--expect-spiffe-id="+other(west))
		ex := c.Round(t.Context())[0]
		if ex.Err == nil || !strings.Contains(ex.Err.Error(), serverID.String()) || !strings.Contains(ex.Err.Error(), "--expect-spiffe-id") {
			t.Fatalf("got %v, want a refusal of %s naming --expect-spiffe-id", ex.Err, serverID)
		}
		if !clientLogs.has("Exchange failed", "is not allowed") {
			t.Error("the client did not log the refusal")
		}
	})
	t.Run("client refuses a service-dns certificate without the name", func(t *testing.T) {
		s := startServer(t, newLogs(t), f.serverDir(t), "--allow-spiffe-id="+clientID.String())
		c := newClient(t, newLogs(t), s, f.clientDir(t), "--expect-spiffe-id="+serverID.String(), "--dns-server-name=web.demo.svc.clusterset.local")
		ex := c.Round(t.Context())[1]
		if ex.Err == nil || !strings.Contains(ex.Err.Error(), "web.demo.svc.clusterset.local") {
			t.Fatalf("got %v, want a refusal for web.demo.svc.clusterset.local", ex.Err)
		}
	})
	t.Run("another member's anchors never verify a cluster-local name", func(t *testing.T) {
		// east's client holds west's anchors in the clusterset bundle and
		// its own in the local one; west's leaf holds echo.demo.svc too.
		s := startServer(t, newLogs(t), f.serverDir(t), "--allow-spiffe-id="+clientID.String())
		dir := f.clientDir(t)
		eastDNS := workloadtest.NewServiceDNSCA(t, "east")
		if err := os.WriteFile(filepath.Join(dir, app.LocalTrustBundleFile), eastDNS.AnchorPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newClient(t, newLogs(t), s, dir, "--expect-spiffe-id="+serverID.String(),
			"--dns-server-name=echo.demo.svc", "--local-dns-trust-bundle="+app.LocalTrustBundleFile)
		ex := c.Round(t.Context())[1]
		if ex.Err == nil || !strings.Contains(ex.Err.Error(), "unknown authority") {
			t.Fatalf("got %v (answer %q), want west's certificate for echo.demo.svc refused", ex.Err, ex.Answer)
		}
	})
	t.Run("a --count client stopped early fails when an exchange failed", func(t *testing.T) {
		s := startServer(t, newLogs(t), f.serverDir(t), "--allow-spiffe-id="+other(east))
		clientLogs := newLogs(t)
		c := newClient(t, clientLogs, s, f.clientDir(t), "--expect-spiffe-id="+serverID.String(), "--count=5", "--interval=1h")
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		// The first round is over once its second exchange is logged; then
		// SIGTERM.
		for deadline := time.Now().Add(30 * time.Second); !clientLogs.has(`"msg"="Exchange"`, clustersetName); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the client logged no exchange within 30s")
			}
		}
		stop()
		if err := <-done; err == nil || !strings.Contains(err.Error(), "1 of 2 exchanges failed") {
			t.Errorf("Run stopped after a failed exchange: %v, want 1 of 2 exchanges failed", err)
		}
	})
	t.Run("anchors of another cluster verify nothing", func(t *testing.T) {
		s := startServer(t, newLogs(t), f.serverDir(t), "--allow-spiffe-id="+clientID.String())
		dir := f.clientDir(t)
		stranger := newFederation(t)
		for name, data := range map[string][]byte{
			workload.TrustBundleFileName(west): stranger.westSPIFFE.AnchorPEM(),
			app.ClustersetTrustBundleFile:      stranger.westDNS.AnchorPEM(),
		} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c := newClient(t, newLogs(t), s, dir, "--expect-spiffe-id="+serverID.String())
		for _, ex := range c.Round(t.Context()) {
			if ex.Err == nil {
				t.Errorf("%s: verified with a stranger's anchors: %q", ex.Over, ex.Answer)
			}
		}
	})
}

// A pod without the projected files fails at start, naming what to
// project.
func TestMissingFiles(t *testing.T) {
	f := newFederation(t)
	dir := f.clientDir(t)
	if err := os.Remove(filepath.Join(dir, workload.TrustBundleFileName(west))); err != nil {
		t.Fatal(err)
	}
	opts := parse(t, "--mode=client", "--credentials-dir="+dir, "--server-address=echo.demo.svc.clusterset.local:8443", "--expect-spiffe-id="+serverID.String())
	_, err := app.NewClient(t.Context(), opts)
	if err == nil || !strings.Contains(err.Error(), workload.TrustBundleFileName(west)) || !strings.Contains(err.Error(), "must project") {
		t.Errorf("got %v, want an error naming %s", err, workload.TrustBundleFileName(west))
	}

	dir = f.serverDir(t)
	if err := os.Remove(filepath.Join(dir, app.ServiceDNSCredentialFile)); err != nil {
		t.Fatal(err)
	}
	opts = parse(t, "--mode=server", "--credentials-dir="+dir, "--listen-address=127.0.0.1:0", "--dns-listen-address=127.0.0.1:0", "--allow-spiffe-id="+clientID.String())
	if s, err := app.StartServer(t.Context(), opts); err == nil {
		s.Close()
		t.Error("the server started without its service-dns certificate")
	} else if !strings.Contains(err.Error(), app.ServiceDNSCredentialFile) {
		t.Errorf("got %v, want an error naming %s", err, app.ServiceDNSCredentialFile)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--mode"},
		{[]string{"--mode=proxy"}, "--mode"},
		{[]string{"--mode=server"}, "--allow-spiffe-id or --allow-trust-domain"},
		{[]string{"--mode=server", "--listen-address=0"}, "no listener"},
		{[]string{"--mode=server", "--allow-spiffe-id=east/client"}, "not a SPIFFE ID"},
		{[]string{"--mode=server", "--allow-trust-domain=East_Example!"}, "not a trust domain"},
		{[]string{"--mode=server", "--allow-trust-domain=east.example", "--server-address=x:1"}, "client flag"},
		{[]string{"--mode=client"}, "nothing to call"},
		{[]string{"--mode=client", "--server-address=echo:8443"}, "--expect-spiffe-id or --expect-trust-domain"},
		{[]string{"--mode=client", "--server-address=echo", "--expect-trust-domain=west.example"}, "host:port"},
		{[]string{"--mode=client", "--dns-server-address=10.0.0.1:9443"}, "--dns-server-name"},
		{[]string{"--mode=client", "--dns-server-address=" + clustersetName + ":9443", "--clusterset-dns-trust-bundle=../x.pem"}, "inside --credentials-dir"},
		{[]string{"--mode=client", "--dns-server-address=echo.demo.svc:9443", "--local-dns-trust-bundle=/x.pem"}, "inside --credentials-dir"},
		// A cluster-local name is verified by this cluster's anchors only.
		{[]string{"--mode=client", "--dns-server-address=echo.demo.svc:9443"}, "--local-dns-trust-bundle must name at least one file"},
		{[]string{"--mode=client", "--dns-server-address=echo:9443", "--dns-server-name=" + clustersetName, "--clusterset-dns-trust-bundle="}, "--clusterset-dns-trust-bundle must name at least one file"},
		{[]string{"--mode=client", "--dns-server-address=echo:9443", "--allow-trust-domain=east.example"}, "server flag"},
		{[]string{"--mode=client", "--dns-server-address=echo:9443", "--interval=0s"}, "--interval"},
	} {
		opts := app.NewOptions()
		fs := pflag.NewFlagSet("demo-workload", pflag.ContinueOnError)
		opts.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := opts.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	// The defaults plus a mode and its peer are enough.
	parse(t, "--mode=server", "--allow-spiffe-id="+clientID.String())
	parse(t, "--mode=client", "--dns-server-address="+clustersetName+":9443")
	parse(t, "--mode=client", "--dns-server-address=echo.demo.svc:9443", "--local-dns-trust-bundle="+app.LocalTrustBundleFile)
}
