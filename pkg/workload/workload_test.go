package workload_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload"
	"github.com/anchorage-dev/anchorage/pkg/workload/workloadtest"
)

var (
	east = spiffeid.RequireTrustDomainFromString("east.anchorage.test")
	west = spiffeid.RequireTrustDomainFromString("west.anchorage.test")
)

// --- certificates: pkg/workload/workloadtest ---

func spiffeID(td spiffeid.TrustDomain, ns, sa string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa)
}

// --- kubelet-like projected volume ---

// projected writes files like the kubelet's AtomicWriter: a timestamped
// folder, "..data" pointing at it swapped with one rename, and each name a
// symlink to "..data/<name>".
type projected struct {
	dir string
	n   int
}

func newProjected(t *testing.T) *projected { return &projected{dir: t.TempDir()} }

func (p *projected) path(name string) string { return filepath.Join(p.dir, name) }

func (p *projected) write(t *testing.T, files map[string][]byte) {
	t.Helper()
	p.n++
	ts := fmt.Sprintf("..2026_01_02_03_04_05.%d", p.n)
	tsDir := filepath.Join(p.dir, ts)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tsDir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tsDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(p.dir, "..data"))
	tmp := filepath.Join(p.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(p.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		// As the kubelet: the top-level name links into "..data", so a
		// nested file's folder is a symlink into the timestamped folder.
		top, _, _ := strings.Cut(name, "/")
		link := filepath.Join(p.dir, top)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(p.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// pod is one pod's volume: its credential and the trust bundles.
type pod struct {
	vol     *projected
	files   map[string][]byte
	src     *workload.Source
	errs    chan error
	tds     []spiffeid.TrustDomain
	dnsFile bool
}

func newPod(t *testing.T, cred []byte, bundles map[spiffeid.TrustDomain][]byte, dns []byte) *pod {
	t.Helper()
	p := &pod{vol: newProjected(t), files: map[string][]byte{}, errs: make(chan error, 100)}
	if cred != nil {
		p.files[workload.CredentialBundleFileName] = cred
	}
	opts := workload.Options{
		TrustBundleFiles: map[spiffeid.TrustDomain]string{},
		RefreshInterval:  -1, // events only, so that the tests exercise the watch
		OnError: func(err error) {
			select {
			case p.errs <- err:
			default:
			}
		},
	}
	for td, b := range bundles {
		p.files[workload.TrustBundleFileName(td)] = b
		opts.TrustBundleFiles[td] = p.vol.path(workload.TrustBundleFileName(td))
	}
	if dns != nil {
		p.files["service-dns-ca.pem"] = dns
		opts.LocalDNSTrustBundleFiles = []string{p.vol.path("service-dns-ca.pem")}
	}
	if cred != nil {
		opts.CredentialBundleFile = p.vol.path(workload.CredentialBundleFileName)
	}
	p.vol.write(t, p.files)
	src, err := workload.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	p.src = src
	return p
}

func (p *pod) update(t *testing.T, name string, data []byte) {
	t.Helper()
	p.files[name] = data
	p.vol.write(t, p.files)
}

// --- TLS plumbing ---

// echoServer accepts TLS connections and echoes lines back.
func echoServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dial connects and does one echo round trip.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := roundTrip(c, "hello"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func roundTrip(c *tls.Conn, msg string) error {
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(io.LimitReader(c, int64(len(msg)+1))).ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", line, msg)
	}
	return nil
}

func mustDial(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := dial(t, addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustFail(t *testing.T, addr string, cfg *tls.Config, wantSubstr string) {
	t.Helper()
	c, err := dial(t, addr, cfg)
	if err == nil {
		c.Close()
		t.Fatal("connection succeeded, want a failure")
	}
	if wantSubstr != "" && !strings.Contains(err.Error(), wantSubstr) {
		t.Errorf("error %q, want it to contain %q", err, wantSubstr)
	}
}

func peerSerial(c *tls.Conn) *big.Int { return c.ConnectionState().PeerCertificates[0].SerialNumber }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- tests ---

func TestSPIFFEMTLS(t *testing.T) {
	eastCA, westCA := workloadtest.NewSPIFFECA(t, east, "east-1"), workloadtest.NewSPIFFECA(t, west, "west-1")
	bundles := map[spiffeid.TrustDomain][]byte{east: eastCA.AnchorPEM(), west: westCA.AnchorPEM()}
	clientID, serverID := spiffeID(east, "shop", "frontend"), spiffeID(west, "shop", "backend")

	client := newPod(t, eastCA.Issue(t, workloadtest.SPIFFELeaf(t, east, "shop", "frontend")).Bundle(), bundles, nil)
	server := newPod(t, westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend")).Bundle(), bundles, nil)

	svid, err := client.src.GetX509SVID()
	if err != nil || svid.ID != clientID {
		t.Fatalf("client SVID %v, %v; want %s", svid, err, clientID)
	}

	addr := echoServer(t, server.src.ServerConfig(tlsconfig.AuthorizeID(clientID)))
	c := mustDial(t, addr, client.src.ClientConfig(tlsconfig.AuthorizeID(serverID)))
	if got, err := x509svidID(c); err != nil || got != serverID {
		t.Errorf("server ID %s (%v), want %s", got, err, serverID)
	}

	t.Run("go-spiffe tlsconfig directly", func(t *testing.T) {
		mustDial(t, addr, tlsconfig.MTLSClientConfig(client.src, client.src, tlsconfig.AuthorizeMemberOf(west)))
	})
	t.Run("client authorizes another ID", func(t *testing.T) {
		mustFail(t, addr, client.src.ClientConfig(tlsconfig.AuthorizeID(spiffeID(west, "shop", "other"))), "unexpected ID")
	})
	t.Run("server authorizes another ID", func(t *testing.T) {
		other := echoServer(t, server.src.ServerConfig(tlsconfig.AuthorizeOneOf(spiffeID(east, "shop", "other"))))
		mustFail(t, other, client.src.ClientConfig(tlsconfig.AuthorizeID(serverID)), "")
	})
	t.Run("client holds the wrong trust domain's bundle", func(t *testing.T) {
		// west's file holds east's anchors: never trust across domains.
		wrong := newPod(t, eastCA.Issue(t, workloadtest.SPIFFELeaf(t, east, "shop", "frontend")).Bundle(),
			map[spiffeid.TrustDomain][]byte{east: eastCA.AnchorPEM(), west: eastCA.AnchorPEM()}, nil)
		mustFail(t, addr, wrong.src.ClientConfig(tlsconfig.AuthorizeID(serverID)), "x509svid")
	})
	t.Run("client has no bundle for the server's trust domain", func(t *testing.T) {
		only := newPod(t, eastCA.Issue(t, workloadtest.SPIFFELeaf(t, east, "shop", "frontend")).Bundle(),
			map[spiffeid.TrustDomain][]byte{east: eastCA.AnchorPEM()}, nil)
		mustFail(t, addr, only.src.ClientConfig(tlsconfig.AuthorizeID(serverID)), "no trust bundle")
	})
	t.Run("a peer of the same trust domain", func(t *testing.T) {
		mustDial(t, echoServer(t, server.src.ServerConfig(tlsconfig.AuthorizeAny())),
			server.src.ClientConfig(tlsconfig.AuthorizeID(serverID)))
	})
}

func x509svidID(c *tls.Conn) (spiffeid.ID, error) {
	uris := c.ConnectionState().PeerCertificates[0].URIs
	if len(uris) != 1 {
		return spiffeid.ID{}, fmt.Errorf("%d URI SANs", len(uris))
	}
	return spiffeid.FromURI(uris[0])
}

func TestRotation(t *testing.T) {
	eastCA, westCA := workloadtest.NewSPIFFECA(t, east, "east-1"), workloadtest.NewSPIFFECA(t, west, "west-1")
	bundles := map[spiffeid.TrustDomain][]byte{east: eastCA.AnchorPEM(), west: westCA.AnchorPEM()}
	serverID := spiffeID(west, "shop", "backend")
	client := newPod(t, eastCA.Issue(t, workloadtest.SPIFFELeaf(t, east, "shop", "frontend")).Bundle(), bundles, nil)
	first := westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
	server := newPod(t, first.Bundle(), bundles, nil)

	addr := echoServer(t, server.src.ServerConfig(tlsconfig.AuthorizeMemberOf(east)))
	clientCfg := client.src.ClientConfig(tlsconfig.AuthorizeID(serverID))
	old := mustDial(t, addr, clientCfg)
	if peerSerial(old).Cmp(first.Serial) != 0 {
		t.Fatalf("server presented serial %s, want %s", peerSerial(old), first.Serial)
	}

	second := westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
	server.update(t, workload.CredentialBundleFileName, second.Bundle())
	waitFor(t, "the new server certificate", func() bool {
		return server.src.Certificate().Leaf.SerialNumber.Cmp(second.Serial) == 0
	})

	if err := roundTrip(old, "after the swap"); err != nil {
		t.Errorf("established connection after the swap: %v", err)
	}
	if peerSerial(old).Cmp(first.Serial) != 0 {
		t.Errorf("established connection's peer changed")
	}
	fresh := mustDial(t, addr, clientCfg)
	if got := peerSerial(fresh); got.Cmp(second.Serial) != 0 {
		t.Errorf("new handshake: serial %s, want the new %s", got, second.Serial)
	}

	t.Run("half-written credential keeps the last good one", func(t *testing.T) {
		b := second.Bundle()
		server.update(t, workload.CredentialBundleFileName, b[:len(b)*2/3])
		select {
		case err := <-server.errs:
			t.Logf("reported: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no error reported for a half-written credential")
		}
		if got := server.src.Certificate().Leaf.SerialNumber; got.Cmp(second.Serial) != 0 {
			t.Errorf("serial %s after a bad reload, want %s kept", got, second.Serial)
		}
		c := mustDial(t, addr, clientCfg)
		if got := peerSerial(c); got.Cmp(second.Serial) != 0 {
			t.Errorf("handshake after a bad reload: serial %s, want %s", got, second.Serial)
		}
		if err := roundTrip(old, "still there"); err != nil {
			t.Errorf("first connection: %v", err)
		}
	})
	t.Run("garbage and mismatched key are rejected", func(t *testing.T) {
		third := westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
		for name, data := range map[string][]byte{
			"garbage":      []byte("not PEM at all"),
			"key mismatch": append(append([]byte{}, first.KeyPEM...), third.ChainPEM...),
			"no chain":     third.KeyPEM,
		} {
			server.update(t, workload.CredentialBundleFileName, data)
			select {
			case err := <-server.errs:
				t.Logf("%s: %v", name, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no error reported", name)
			}
		}
		if got := server.src.Certificate().Leaf.SerialNumber; got.Cmp(second.Serial) != 0 {
			t.Errorf("serial %s, want %s kept", got, second.Serial)
		}
		// A good file again is picked up.
		server.update(t, workload.CredentialBundleFileName, third.Bundle())
		waitFor(t, "recovery", func() bool { return server.src.Certificate().Leaf.SerialNumber.Cmp(third.Serial) == 0 })
		if got := peerSerial(mustDial(t, addr, clientCfg)); got.Cmp(third.Serial) != 0 {
			t.Errorf("serial %s, want %s", got, third.Serial)
		}
	})
}

func TestTrustBundleChange(t *testing.T) {
	east1, east2 := workloadtest.NewSPIFFECA(t, east, "east-1"), workloadtest.NewSPIFFECA(t, east, "east-2")
	westCA := workloadtest.NewSPIFFECA(t, west, "west-1")
	serverID := spiffeID(west, "shop", "backend")
	server := newPod(t, westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend")).Bundle(),
		map[spiffeid.TrustDomain][]byte{east: east1.AnchorPEM(), west: westCA.AnchorPEM()}, nil)
	// The client's leaf comes from a second cluster of the east trust domain.
	client := newPod(t, east2.Issue(t, workloadtest.SPIFFELeaf(t, east, "shop", "frontend")).Bundle(),
		map[spiffeid.TrustDomain][]byte{west: westCA.AnchorPEM()}, nil)

	addr := echoServer(t, server.src.ServerConfig(tlsconfig.AuthorizeMemberOf(east)))
	cfg := client.src.ClientConfig(tlsconfig.AuthorizeID(serverID))
	mustFail(t, addr, cfg, "")

	server.update(t, workload.TrustBundleFileName(east), append(east1.AnchorPEM(), east2.AnchorPEM()...))
	waitFor(t, "the east bundle with two anchors", func() bool {
		b, err := server.src.GetX509BundleForTrustDomain(east)
		return err == nil && len(b.X509Authorities()) == 2
	})
	mustDial(t, addr, cfg)

	// A bad bundle keeps the two anchors.
	server.update(t, workload.TrustBundleFileName(east), []byte("-----BEGIN CERTIFICATE-----\nAAAA"))
	select {
	case err := <-server.errs:
		t.Logf("reported: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no error reported for a bad bundle")
	}
	mustDial(t, addr, cfg)
}

func TestDNS(t *testing.T) {
	issuer := "https://east-1.issuer.test"
	dnsCA := workloadtest.NewCA(t, signers.ServiceDNSCAProfile("east-1", "cluster.local", issuer), issuer)
	tmpl, err := signers.ServiceDNSLeaf([]string{"web.ns.svc", "web.ns.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	first := dnsCA.Issue(t, tmpl)
	server := newPod(t, first.Bundle(), nil, nil)
	client := newPod(t, nil, nil, dnsCA.AnchorPEM())

	if _, err := server.src.GetX509SVID(); err == nil {
		t.Error("GetX509SVID on a service-dns credential: want an error")
	}
	addr := echoServer(t, server.src.DNSServerConfig())
	c := mustDial(t, addr, client.src.DNSClientConfig("web.ns.svc"))
	if peerSerial(c).Cmp(first.Serial) != 0 {
		t.Errorf("serial %s, want %s", peerSerial(c), first.Serial)
	}
	mustDial(t, addr, client.src.DNSClientConfig("web.ns.svc.cluster.local"))
	mustFail(t, addr, client.src.DNSClientConfig("api.ns.svc"), "api.ns.svc")

	t.Run("other CA", func(t *testing.T) {
		otherCA := workloadtest.NewCA(t, signers.ServiceDNSCAProfile("west-1", "cluster.local", issuer), issuer)
		stranger := newPod(t, nil, nil, otherCA.AnchorPEM())
		mustFail(t, addr, stranger.src.DNSClientConfig("web.ns.svc"), "unknown authority")
	})
	t.Run("rotation", func(t *testing.T) {
		second := dnsCA.Issue(t, tmpl)
		server.update(t, workload.CredentialBundleFileName, second.Bundle())
		waitFor(t, "new DNS certificate", func() bool {
			return server.src.Certificate().Leaf.SerialNumber.Cmp(second.Serial) == 0
		})
		if err := roundTrip(c, "still up"); err != nil {
			t.Errorf("established connection: %v", err)
		}
		if got := peerSerial(mustDial(t, addr, client.src.DNSClientConfig("web.ns.svc"))); got.Cmp(second.Serial) != 0 {
			t.Errorf("serial %s, want %s", got, second.Serial)
		}
	})
	t.Run("roots reload", func(t *testing.T) {
		otherCA := workloadtest.NewCA(t, signers.ServiceDNSCAProfile("west-1", "cluster.local", issuer), issuer)
		other := otherCA.Issue(t, tmpl)
		otherServer := newPod(t, other.Bundle(), nil, nil)
		otherAddr := echoServer(t, otherServer.src.DNSServerConfig())
		cfg := client.src.DNSClientConfig("web.ns.svc")
		mustFail(t, otherAddr, cfg, "unknown authority")
		client.update(t, "service-dns-ca.pem", append(dnsCA.AnchorPEM(), otherCA.AnchorPEM()...))
		waitFor(t, "new DNS roots", func() bool {
			c, err := dial(t, otherAddr, cfg)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	})
}

func TestSeparateKeyAndChainFiles(t *testing.T) {
	westCA := workloadtest.NewSPIFFECA(t, west, "west-1")
	l := westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
	vol := newProjected(t)
	vol.write(t, map[string][]byte{"tls.key": l.KeyPEM, "tls.crt": l.ChainPEM, "ca.pem": westCA.AnchorPEM()})
	src, err := workload.New(t.Context(), workload.Options{
		KeyFile:              vol.path("tls.key"),
		CertificateChainFile: vol.path("tls.crt"),
		TrustBundleFiles:     map[spiffeid.TrustDomain]string{west: vol.path("ca.pem")},
		DisableWatch:         true,
		RefreshInterval:      20 * time.Millisecond, // the tick alone reloads
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil || svid.ID != spiffeID(west, "shop", "backend") {
		t.Fatalf("SVID %v, %v", svid, err)
	}
	next := westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
	vol.write(t, map[string][]byte{"tls.key": next.KeyPEM, "tls.crt": next.ChainPEM, "ca.pem": westCA.AnchorPEM()})
	waitFor(t, "periodic reload", func() bool { return src.Certificate().Leaf.SerialNumber.Cmp(next.Serial) == 0 })

	addr := echoServer(t, src.ServerConfig(tlsconfig.AuthorizeAny()))
	mustDial(t, addr, src.ClientConfig(tlsconfig.AuthorizeMemberOf(west)))
	if err := src.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	vol := newProjected(t)
	vol.write(t, map[string][]byte{"garbage.pem": []byte("nope")})
	ctx := context.Background()
	for name, opts := range map[string]workload.Options{
		"nothing":           {},
		"both forms":        {CredentialBundleFile: "a", KeyFile: "b", CertificateChainFile: "c"},
		"key without chain": {KeyFile: "b"},
		"missing file":      {CredentialBundleFile: vol.path("missing.pem")},
		"garbage":           {CredentialBundleFile: vol.path("garbage.pem")},
		"garbage bundle":    {TrustBundleFiles: map[spiffeid.TrustDomain]string{east: vol.path("garbage.pem")}},
	} {
		if src, err := workload.New(ctx, opts); err == nil {
			src.Close()
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}

// A client in east holds east's own service-dns anchors and the
// clusterset's (east and west): west's CA may sign "svc" names, yet it only
// ever vouches for clusterset names.
func TestDNSScopes(t *testing.T) {
	eastDNS, westDNS := workloadtest.NewServiceDNSCA(t, "east"), workloadtest.NewServiceDNSCA(t, "west")
	const local, clusterset = "db.prod.svc", "db.prod.svc.clusterset.local"
	serve := func(ca *workloadtest.CA) string {
		return echoServer(t, newPod(t, ca.Issue(t, workloadtest.ServiceDNSLeaf(t, local, clusterset)).Bundle(), nil, nil).src.DNSServerConfig())
	}
	west, east := serve(westDNS), serve(eastDNS)

	vol := newProjected(t)
	vol.write(t, map[string][]byte{
		"local.pem":      eastDNS.AnchorPEM(),
		"clusterset.pem": append(eastDNS.AnchorPEM(), westDNS.AnchorPEM()...),
	})
	client, err := workload.New(t.Context(), workload.Options{
		LocalDNSTrustBundleFiles:      []string{vol.path("local.pem")},
		ClustersetDNSTrustBundleFiles: []string{vol.path("clusterset.pem")},
		RefreshInterval:               -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	mustFail(t, west, client.DNSClientConfig(local), "unknown authority")
	mustDial(t, west, client.DNSClientConfig(clusterset))
	mustDial(t, east, client.DNSClientConfig(local))
	mustDial(t, east, client.DNSClientConfig(clusterset))

	t.Run("no bundle of the name's scope", func(t *testing.T) {
		only, err := workload.New(t.Context(), workload.Options{ClustersetDNSTrustBundleFiles: []string{vol.path("clusterset.pem")}, RefreshInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer only.Close()
		mustFail(t, east, only.DNSClientConfig(local), "no local DNS trust bundle")
		mustDial(t, east, only.DNSClientConfig(clusterset))
	})
}

// A credentialBundlePath in a subfolder: the subfolder is a symlink into the
// kubelet's timestamped folder, which every rotation removes. Rotations are
// seen through the watch alone, again and again.
func TestNestedPathRotations(t *testing.T) {
	westCA := workloadtest.NewSPIFFECA(t, west, "west-1")
	const name = "certs/" + workload.CredentialBundleFileName
	vol := newProjected(t)
	vol.write(t, map[string][]byte{name: westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend")).Bundle()})
	src, err := workload.New(t.Context(), workload.Options{CredentialBundleFile: vol.path(name), RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := range 4 {
		next := westCA.Issue(t, workloadtest.SPIFFELeaf(t, west, "shop", "backend"))
		vol.write(t, map[string][]byte{name: next.Bundle()})
		waitFor(t, fmt.Sprintf("rotation %d", i+1), func() bool { return src.Certificate().Leaf.SerialNumber.Cmp(next.Serial) == 0 })
	}
}
