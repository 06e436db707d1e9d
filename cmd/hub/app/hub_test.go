package app

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// writePair writes a new self-signed certificate for 127.0.0.1 and its key
// to certFile and keyFile, each replaced at once (as the kubelet swaps a
// Secret volume), and returns the certificate.
func writePair(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "hub"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// The key first: the watcher reads the pair on the certificate's change.
	replace(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	replace(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func replace(t *testing.T, file string, data []byte) {
	t.Helper()
	tmp := file + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// A renewed serving certificate (cert-manager rewrites the Secret) is
// served to new connections without a restart.
func TestServingCertificateIsReloaded(t *testing.T) {
	dir := t.TempDir()
	opts := NewOptions()
	opts.ExternalURL = "https://127.0.0.1"
	opts.TLSCertFile, opts.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writePair(t, opts.TLSCertFile, opts.TLSKeyFile, 1)

	log := testr.New(t)
	tlsCfg, certs, _, err := serving(opts, log)
	if err != nil {
		t.Fatal(err)
	}
	if certs == nil {
		t.Fatal("no certificate watcher for --tls-cert-file")
	}
	if certs.NeedLeaderElection() {
		t.Error("the certificate watcher waits for leadership: followers would serve a stale certificate")
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- certs.Start(ctx) }()
	defer func() { cancel(); <-watched }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := HTTPServer(http.NotFoundHandler(), tlsCfg, log)
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	defer func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}()

	presented := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares the certificate itself
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	if got := presented(); !bytes.Equal(got.Raw, first.Raw) {
		t.Fatalf("serving serial %v, want the first certificate", got.SerialNumber)
	}

	second := writePair(t, opts.TLSCertFile, opts.TLSKeyFile, 2)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if bytes.Equal(presented().Raw, second.Raw) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not served 30s after its files changed")
		}
	}
}

// A replica shutting down answers the requests it holds (long polls are
// released by a shutdown hook) before its serving runnable returns, after
// which the process exits.
func TestServeWaitsForHeldRequests(t *testing.T) {
	dir := t.TempDir()
	opts := NewOptions()
	opts.ExternalURL = "https://127.0.0.1"
	opts.TLSCertFile, opts.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, opts.TLSCertFile, opts.TLSKeyFile, 1)
	log := testr.New(t)
	tlsCfg, _, _, err := serving(opts, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	arrived, released := make(chan struct{}), make(chan struct{})
	var answered atomic.Bool
	held := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(arrived)
		<-released
		time.Sleep(100 * time.Millisecond) // an answer that takes a moment
		w.WriteHeader(http.StatusNoContent)
		answered.Store(true)
	})
	h := &Hub{ln: ln, server: HTTPServer(held, tlsCfg, log)}
	h.server.RegisterOnShutdown(func() { close(released) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serveRunnable(h, log).Start(ctx) }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test's own server
	go func() {
		if resp, err := client.Get("https://" + ln.Addr().String() + "/"); err == nil {
			_ = resp.Body.Close()
		}
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached the handler")
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the serving runnable did not return after shutdown")
	}
	if !answered.Load() {
		t.Error("the serving runnable returned while a request was still held: the process would exit under it")
	}
}
