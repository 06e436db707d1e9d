package oidcbundle

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-jose/go-jose/v4"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// -update regenerates the CA certificates in testdata (with pkg/signers, a
// fixed clock and the fixed keys in testdata) and the golden documents.
// The certificates are committed because ECDSA signatures are randomised:
// generating them on every run would change every golden body.
var update = flag.Bool("update", false, "regenerate testdata certificates and golden files")

// The fixed world of these tests.
var (
	t0         = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	hubURL     = "https://hub.example"
	eastIssuer = hubURL + "/clusters/east"
	westIssuer = hubURL + "/clusters/west"
	agentSub   = "system:serviceaccount:anchorage-system:member-agent"
)

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

func TestMain(m *testing.M) {
	flag.Parse()
	if *update {
		if err := generateCertificates(); err != nil {
			fmt.Fprintln(os.Stderr, "generating testdata:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// testCAs are the CA certificates of testdata: name → profile and key.
var testCAs = []struct {
	name    string
	profile signers.CAProfile
	key     string
	at      time.Time
}{
	{"east-spiffe", signers.SPIFFECAProfile("east", "east.example", eastIssuer), "ca-spiffe", t0},
	{"east-spiffe-next", signers.SPIFFECAProfile("east", "east.example", eastIssuer), "ca-spiffe-next", t0.Add(24 * time.Hour)},
	{"east-service-dns", signers.ServiceDNSCAProfile("east", "cluster.local", eastIssuer), "ca-service-dns", t0},
	{"west-spiffe", signers.SPIFFECAProfile("west", "west.example", westIssuer), "ca-west", t0},
}

func generateCertificates() error {
	for i, c := range testCAs {
		data, err := os.ReadFile(filepath.Join("testdata", c.key+".key.pem"))
		if err != nil {
			return err
		}
		key, err := signers.ParsePrivateKeyPEM(data)
		if err != nil {
			return err
		}
		serial := int64(1000 + i)
		env := signers.Env{Clock: fixedClock(c.at), Serial: func() (*big.Int, error) { return big.NewInt(serial), nil }}
		ca, err := signers.NewCA(env, c.profile, key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join("testdata", c.name+".crt.pem"), signers.EncodeCertificatesPEM([]*x509.Certificate{ca.Certificate}), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := signers.ParsePrivateKeyPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".crt.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := signers.ParseCertificatesPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// Key ids as kube-apiserver would name them are long hashes; short ones
// keep the expected errors readable.
const (
	kidRSA = "rsa-key"
	kidEC  = "ec-key"
)

// eastJWKS is the member's JWKS as its apiserver would serve it, RSA key
// first (the canonical form sorts by kid).
func eastJWKS(t testing.TB) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: readKey(t, "token-rsa").Public(), KeyID: kidRSA, Algorithm: "RS256", Use: "sig"},
		{Key: readKey(t, "token-ec").Public(), KeyID: kidEC, Algorithm: "ES256", Use: "sig"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eastMember(t testing.TB) Member {
	t.Helper()
	return Member{
		Name:        "east",
		Issuer:      eastIssuer,
		TrustDomain: "east.example",
		JWKS:        eastJWKS(t),
		Anchors: map[string][]*x509.Certificate{
			signers.SPIFFESignerName:     {readCert(t, "east-spiffe"), readCert(t, "east-spiffe-next")},
			signers.ServiceDNSSignerName: {readCert(t, "east-service-dns")},
		},
		SPIFFESequence:    7,
		SPIFFERefreshHint: 5 * time.Minute,
	}
}

func westMember(t testing.TB) Member {
	t.Helper()
	return Member{
		Name:        "west",
		TrustDomain: "west.example",
		JWKS:        []byte(`{"keys":[]}`),
		Anchors:     map[string][]*x509.Certificate{signers.SPIFFESignerName: {readCert(t, "west-spiffe")}},
	}
}

// newTestStore holds east and west and the trust domain east.example.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := NewStore(Options{HubURL: hubURL, Clock: fixedClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Member{eastMember(t), westMember(t)} {
		if err := s.SetMember(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetTrustDomain(TrustDomainBundle{
		TrustDomain: "east.example",
		Anchors:     []*x509.Certificate{readCert(t, "east-spiffe"), readCert(t, "east-spiffe-next")},
		Sequence:    12,
		RefreshHint: 30 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// newRouter mounts the store as the hub does: on its own chi router.
func newRouter(s *Store) chi.Router {
	r := chi.NewRouter()
	s.Routes(r)
	return r
}

// do sends a request through the router. target is sent as the raw
// request URI, so escapes and dot segments reach chi untouched.
func do(t testing.TB, h http.Handler, method, target string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// etagOf is the documented ETag formula, computed independently.
func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// golden compares got with testdata/golden/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n got %s\nwant %s", name, got, want)
	}
}
