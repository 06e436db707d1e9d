package hubclient_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorage-dev/anchorage/internal/agent/hubclient"
)

// testCA is a CA and a serving certificate it signed for 127.0.0.1.
type testCA struct {
	pem     []byte
	serving tls.Certificate
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: ca.NotBefore, NotAfter: ca.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		serving: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// --hub-ca-file pins the hub's CA: only its certificates are trusted, the
// hub's host must be in the certificate, and a rotated file is used by the
// next connection without a restart.
func TestPinnedTLSFollowsTheFile(t *testing.T) {
	oldCA, newCA := newTestCA(t, "old hub CA"), newTestCA(t, "new hub CA")
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(&oldCA.serving)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving.Load(), nil }}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	hubURL := "https://" + ln.Addr().String()

	caFile := filepath.Join(t.TempDir(), "ca.crt")
	call := func(host string) error {
		// A new transport per call: every call is a new handshake.
		tr := &http.Transport{TLSClientConfig: hubclient.PinnedTLS(caFile, host)}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(hubURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	wantErr := func(host, want string) {
		t.Helper()
		if err := call(host); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one containing %q", err, want)
		}
	}

	wantErr("127.0.0.1", "create Secret anchorage-hub-ca with the hub's CA as ca.crt, or omit the flag to trust the system roots")
	write(t, caFile, []byte("not PEM"))
	wantErr("127.0.0.1", "holds no PEM certificate")
	write(t, caFile, oldCA.pem)
	if err := call("127.0.0.1"); err != nil {
		t.Fatalf("with the hub's CA: %v", err)
	}
	wantErr("127.0.0.2", "does not verify against --hub-ca-file")

	// The hub moves to a certificate of a new CA: refused until the file
	// holds it, then trusted without a new config.
	serving.Store(&newCA.serving)
	wantErr("127.0.0.1", "does not verify against --hub-ca-file")
	write(t, caFile, append(append([]byte{}, oldCA.pem...), newCA.pem...))
	if err := call("127.0.0.1"); err != nil {
		t.Fatalf("after the CA file was rotated: %v", err)
	}
}

func write(t *testing.T, file string, data []byte) {
	t.Helper()
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
