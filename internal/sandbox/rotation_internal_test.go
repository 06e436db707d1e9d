package sandbox

import (
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/workload/workloadtest"
)

func serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("west.anchorage.test")
	l := workloadtest.NewSPIFFECA(t, td, "west").Issue(t, workloadtest.SPIFFELeaf(t, td, "demo", "server"))
	cert, err := tls.X509KeyPair(l.ChainPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stopping the traffic cuts a handshake short: the server counts it as
// failed, but the rotation must not (it broke nothing).
func TestStopTrafficMidHandshake(t *testing.T) {
	cert := serverCert(t)
	var block atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	srv, err := startEchoServer(t.Context(), "echo-0", &tls.Config{MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if block.Load() {
				entered <- struct{}{}
				<-release
			}
			return &cert, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the test is about counting, not trust
	long, err := dialEcho(t.Context(), srv.Addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()

	block.Store(true)
	tr, stop := startTraffic(t.Context(), srv, client, long)
	<-entered // the client waits for the server's certificate
	serverErrors := stop()
	close(release)
	waitUntil(t, "the server to count the cut handshake", func() bool { return srv.stats().failed == 1 })
	if serverErrors != 0 || tr.failures != 0 {
		t.Errorf("stopping the traffic counted %d server handshake errors and %d failures, want none: %v", serverErrors, tr.failures, tr.errs)
	}
}

// A handshake the server refuses while the traffic runs still counts.
func TestTrafficCountsRefusals(t *testing.T) {
	cert := serverCert(t)
	srv, err := startEchoServer(t.Context(), "echo-0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the test is about counting, not trust
	// The long-lived connection goes to a server that admits the client.
	open, err := startEchoServer(t.Context(), "echo-1", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	long, err := dialEcho(t.Context(), open.Addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	tr, stop := startTraffic(t.Context(), srv, client, long)
	defer stop()
	waitUntil(t, "a refused handshake", func() bool { return tr.failed() && srv.stats().failed > 0 })
	if n := stop(); n == 0 {
		t.Error("the server's refusals during the traffic were not counted")
	}
}
