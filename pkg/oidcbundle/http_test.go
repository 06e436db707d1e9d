package oidcbundle

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	jwksPath   = "/clusters/east/openid/v1/jwks"
	bundlePath = "/clusters/east/.well-known/spiffe-bundle"
)

func TestConditionalGet(t *testing.T) {
	r := newRouter(newTestStore(t))
	full := do(t, r, http.MethodGet, jwksPath, nil)
	etag := full.Header.Get("ETag")
	fullBody := body(t, full)
	opaque := strings.Trim(etag, `"`)

	tests := []struct {
		name    string
		method  string
		path    string
		inm     []string // If-None-Match header lines
		status  int
		hasBody bool
	}{
		{"same tag", "GET", jwksPath, []string{etag}, 304, false},
		{"weak form of the tag", "GET", jwksPath, []string{"W/" + etag}, 304, false},
		{"in a list", "GET", jwksPath, []string{`"0000", ` + etag + `, "ffff"`}, 304, false},
		{"list without spaces", "GET", jwksPath, []string{`"0000",` + etag}, 304, false},
		{"on a second header line", "GET", jwksPath, []string{`"0000"`, etag}, 304, false},
		{"star", "GET", jwksPath, []string{"*"}, 304, false},
		{"HEAD with the tag", "HEAD", jwksPath, []string{etag}, 304, false},
		{"other tag", "GET", jwksPath, []string{`"0000"`}, 200, true},
		{"unquoted tag", "GET", jwksPath, []string{opaque}, 200, true},
		{"tag of another document", "GET", bundlePath, []string{etag}, 200, true},
		{"malformed list", "GET", jwksPath, []string{`"0000", junk, ` + etag}, 200, true},
		{"unterminated tag", "GET", jwksPath, []string{`"` + opaque}, 200, true},
		{"empty", "GET", jwksPath, []string{""}, 200, true},
		{"star for a missing member", "GET", "/clusters/north/openid/v1/jwks", []string{"*"}, 404, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, r, tc.method, tc.path, http.Header{"If-None-Match": tc.inm})
			got := body(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if (got != "") != tc.hasBody {
				t.Errorf("body %q", got)
			}
			if tc.status == http.StatusNotModified {
				want := http.Header{"Etag": {etag}, "Cache-Control": {"public, max-age=60"}, "X-Content-Type-Options": {"nosniff"}}
				if !equalHeader(resp.Header, want) {
					t.Errorf("304 headers %v, want %v", resp.Header, want)
				}
			}
			if tc.status == http.StatusOK && tc.path == jwksPath && got != fullBody {
				t.Errorf("200 body differs")
			}
		})
	}
}

func TestHead(t *testing.T) {
	r := newRouter(newTestStore(t))
	for _, path := range []string{jwksPath, bundlePath, "/trust-domains/east.example/bundle", "/clusters/east/.well-known/anchorage/trust-bundles/spiffe.pem"} {
		get := do(t, r, http.MethodGet, path, nil)
		getBody := body(t, get)
		head := do(t, r, http.MethodHead, path, nil)
		if got := body(t, head); head.StatusCode != 200 || got != "" {
			t.Errorf("HEAD %s: %d %q", path, head.StatusCode, got)
		}
		if !equalHeader(head.Header, get.Header) || head.Header.Get("Content-Length") != fmt.Sprint(len(getBody)) {
			t.Errorf("HEAD %s headers %v, GET %v", path, head.Header, get.Header)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	r := newRouter(newTestStore(t))
	paths := []string{jwksPath, bundlePath, "/trust-domains/east.example/bundle", "/clusters/north/openid/v1/jwks", "/clusters/east/nothing"}
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		for _, path := range paths {
			resp := do(t, r, method, path, nil)
			got := body(t, resp)
			want := `{"error":"method ` + method + ` is not allowed: these documents are read-only (GET, HEAD)"}` + "\n"
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" || got != want ||
				resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s %s: %d Allow=%q %s", method, path, resp.StatusCode, resp.Header.Get("Allow"), got)
			}
		}
	}
}

// pathTricks are requests that must never reach a document: each gives a
// JSON 400 or 404.
func pathTricks(t testing.TB) []struct {
	name, path string
	status     int
	err        string
} {
	skid := skidHex(readCert(t, "east-spiffe"))
	dnsSKID := skidHex(readCert(t, "east-service-dns"))
	const ca = "/clusters/east/.well-known/anchorage/ca/"
	const tb = "/clusters/east/.well-known/anchorage/trust-bundles/"
	return []struct {
		name, path string
		status     int
		err        string
	}{
		{"unknown member", "/clusters/north/openid/v1/jwks", 404, `cluster "north" is not a member of this hub`},
		{"uppercase member", "/clusters/EAST/openid/v1/jwks", 400, `malformed cluster name "EAST": cluster names are DNS labels`},
		{"encoded slash in member", "/clusters/east%2Fwest/openid/v1/jwks", 400, `malformed cluster name "east%2Fwest": cluster names are DNS labels`},
		{"encoded dots as member", "/clusters/%2e%2e/openid/v1/jwks", 400, `malformed cluster name "%2e%2e": cluster names are DNS labels`},
		{"encoded letter in member", "/clusters/%65ast/openid/v1/jwks", 400, `malformed cluster name "%65ast": cluster names are DNS labels`},
		{"dot segments", "/clusters/west/../east/openid/v1/jwks", 404, "no such document"},
		{"dot dot as member", "/clusters/../openid/v1/jwks", 400, `malformed cluster name "..": cluster names are DNS labels`},
		{"empty member", "/clusters//openid/v1/jwks", 400, `malformed cluster name "": cluster names are DNS labels`},
		{"trailing slash", "/clusters/east/openid/v1/jwks/", 404, "no such document"},
		{"trailing slash on discovery", "/clusters/east/.well-known/openid-configuration/", 404, "no such document"},
		{"issuer itself", "/clusters/east", 404, "no such document"},
		{"unknown document", "/clusters/east/.well-known/spiffe-bundle.json", 404, "no such document"},
		{"double slash", "/clusters/east//openid/v1/jwks", 404, "no such document"},

		{"pem without suffix", tb + "spiffe", 404, "no such document: trust bundles are named <signer-slug>.pem"},
		{"pem uppercase", tb + "SPIFFE.pem", 400, `malformed signer slug "SPIFFE"`},
		{"pem double suffix", tb + "spiffe.pem.pem", 400, `malformed signer slug "spiffe.pem"`},
		{"pem encoded traversal", tb + "..%2F..%2Fwest.pem", 400, `malformed signer slug "..%2F..%2Fwest"`},
		{"pem dot dot", tb + "...pem", 400, `malformed signer slug ".."`},
		{"pem empty slug", tb + ".pem", 400, `malformed signer slug ""`},
		{"pem unknown signer", tb + "mesh.pem", 404, `cluster "east" has no anchors for signer "mesh"`},
		{"pem trailing slash", tb + "spiffe.pem/", 404, "no such document"},
		{"pem encoded suffix", tb + "spiffe%2Epem", 404, "no such document: trust bundles are named <signer-slug>.pem"},

		{"skid uppercase", ca + "spiffe/" + strings.ToUpper(skid) + ".der", 400, `malformed subject key id "` + strings.ToUpper(skid) + `": lowercase hex, whole bytes`},
		{"skid odd length", ca + "spiffe/" + skid[:39] + ".der", 400, `malformed subject key id "` + skid[:39] + `": lowercase hex, whole bytes`},
		{"skid too short", ca + "spiffe/" + skid[:38] + ".der", 404, `cluster "east" has no spiffe CA with subject key id ` + skid[:38]},
		{"skid too long", ca + "spiffe/" + skid + "00.der", 404, `cluster "east" has no spiffe CA with subject key id ` + skid + "00"},
		{"skid far too long", ca + "spiffe/" + strings.Repeat("ab", 65) + ".der", 400, `malformed subject key id "` + strings.Repeat("ab", 65) + `": lowercase hex, whole bytes`},
		{"skid not hex", ca + "spiffe/" + skid[:38] + "zz.der", 400, `malformed subject key id "` + skid[:38] + `zz": lowercase hex, whole bytes`},
		{"skid empty", ca + "spiffe/.der", 400, `malformed subject key id "": lowercase hex, whole bytes`},
		{"skid of another signer", ca + "service-dns/" + skid + ".der", 404, `cluster "east" has no service-dns CA with subject key id ` + skid},
		{"skid under another member", "/clusters/west/.well-known/anchorage/ca/service-dns/" + dnsSKID + ".der", 404, `cluster "west" has no service-dns CA with subject key id ` + dnsSKID},
		{"skid without suffix", ca + "spiffe/" + skid, 404, "no such document: CA certificates are named <subject-key-id-hex>.der"},
		{"skid encoded suffix", ca + "spiffe/" + skid + "%2Eder", 404, "no such document: CA certificates are named <subject-key-id-hex>.der"},
		{"skid with NUL", ca + "spiffe/" + skid + ".der%00", 404, "no such document: CA certificates are named <subject-key-id-hex>.der"},
		{"skid dot segments", ca + "spiffe/../spiffe/" + skid + ".der", 404, "no such document"},
		{"ca slug traversal", ca + "%2e%2e/" + skid + ".der", 400, `malformed signer slug "%2e%2e"`},
		{"ca slug uppercase", ca + "Spiffe/" + skid + ".der", 400, `malformed signer slug "Spiffe"`},
		{"ca trailing slash", ca + "spiffe/" + skid + ".der/", 404, "no such document"},

		{"td unknown", "/trust-domains/west.example/bundle", 404, `trust domain "west.example" is not served by this hub`},
		{"td uppercase", "/trust-domains/East.example/bundle", 400, `malformed trust domain "East.example"`},
		{"td as SPIFFE ID", "/trust-domains/spiffe:%2F%2Feast.example/bundle", 400, `malformed trust domain "spiffe:%2F%2Feast.example"`},
		{"td dot dot", "/trust-domains/../bundle", 404, `trust domain ".." is not served by this hub`},
		{"td trailing slash", "/trust-domains/east.example/bundle/", 404, "no such document"},
		{"td bundle.json", "/trust-domains/east.example/bundle.json", 404, "no such document"},
		{"td encoded slash", "/trust-domains/east.example%2Fbundle", 404, "no such document"},
	}
}

func TestPathTricks(t *testing.T) {
	r := newRouter(newTestStore(t))
	for _, tc := range pathTricks(t) {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, r, http.MethodGet, tc.path, nil)
			got := body(t, resp)
			want := fmt.Sprintf("{\"error\":%q}\n", tc.err) // messages keep "<" and ">" as they are
			if resp.StatusCode != tc.status || got != want {
				t.Errorf("GET %s: %d %s\nwant %d %s", tc.path, resp.StatusCode, got, tc.status, want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

// FuzzPaths: whatever the path, the router answers without panicking, and
// a 200 is only ever the document that the (unescaped) path names.
func FuzzPaths(f *testing.F) {
	s := newTestStore(f)
	r := newRouter(s)
	valid := map[string]string{} // path → body
	for _, p := range []string{
		"/clusters/east/.well-known/openid-configuration", jwksPath, bundlePath,
		"/clusters/east/.well-known/anchorage/trust-bundles",
		"/clusters/east/.well-known/anchorage/trust-bundles/spiffe.pem",
		"/clusters/east/.well-known/anchorage/trust-bundles/service-dns.pem",
		"/clusters/east/.well-known/anchorage/ca/spiffe/" + skidHex(readCert(f, "east-spiffe")) + ".der",
		"/clusters/east/.well-known/anchorage/ca/spiffe/" + skidHex(readCert(f, "east-spiffe-next")) + ".der",
		"/clusters/east/.well-known/anchorage/ca/service-dns/" + skidHex(readCert(f, "east-service-dns")) + ".der",
		"/clusters/west/.well-known/openid-configuration", "/clusters/west/openid/v1/jwks", "/clusters/west/.well-known/spiffe-bundle",
		"/clusters/west/.well-known/anchorage/trust-bundles",
		"/clusters/west/.well-known/anchorage/trust-bundles/spiffe.pem",
		"/clusters/west/.well-known/anchorage/ca/spiffe/" + skidHex(readCert(f, "west-spiffe")) + ".der",
		"/trust-domains/east.example/bundle",
	} {
		valid[p] = body(f, do(f, r, http.MethodGet, p, nil))
		f.Add(p)
	}
	for _, tc := range pathTricks(f) {
		f.Add(tc.path)
	}
	f.Fuzz(func(t *testing.T, path string) {
		u, err := url.ParseRequestURI(path)
		if err != nil || u.Host != "" || u.RawQuery != "" || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n#?") {
			t.Skip()
		}
		resp := do(t, r, http.MethodGet, path, nil)
		got := body(t, resp)
		switch resp.StatusCode {
		case http.StatusOK:
			want, ok := valid[path]
			if !ok {
				t.Fatalf("200 for %q, which names no document", path)
			}
			if got != want {
				t.Fatalf("%q served another document", path)
			}
		case http.StatusBadRequest, http.StatusNotFound:
			if !strings.HasPrefix(got, `{"error":`) && strings.HasPrefix(path, "/clusters/") {
				t.Fatalf("%q: non-JSON error %q", path, got)
			}
		default:
			t.Fatalf("%q: status %d", path, resp.StatusCode)
		}
	})
}

// TestConcurrentReadsAndWrites runs readers through the router while the
// members and trust domains change; with -race it checks the snapshot
// handling, and every response must be self-consistent (ETag of its own
// body, a parseable bundle).
func TestConcurrentReadsAndWrites(t *testing.T) {
	s := newTestStore(t)
	r := newRouter(s)
	td := spiffeid.RequireTrustDomainFromString("east.example")
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for _, path := range []string{bundlePath, jwksPath, "/trust-domains/east.example/bundle", "/clusters/west/openid/v1/jwks"} {
					resp := do(t, r, http.MethodGet, path, nil)
					got := body(t, resp)
					reads.Add(1)
					if resp.StatusCode == http.StatusNotFound && strings.HasPrefix(path, "/clusters/west") {
						continue // west comes and goes
					}
					if resp.StatusCode != http.StatusOK {
						t.Errorf("%s: %d %s", path, resp.StatusCode, got)
						return
					}
					if resp.Header.Get("ETag") != etagOf([]byte(got)) {
						t.Errorf("%s: ETag does not match the body", path)
						return
					}
					if path != jwksPath && !strings.HasPrefix(path, "/clusters/west") {
						if _, err := spiffebundle.Parse(td, []byte(got)); err != nil {
							t.Errorf("%s: %v", path, err)
							return
						}
					}
				}
			}
		}()
	}
	east, west := eastMember(t), westMember(t)
	for i := range 100 {
		east.SPIFFESequence = uint64(i)
		if err := s.SetMember(east); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			s.DeleteMember("west")
		} else if err := s.SetMember(west); err != nil {
			t.Fatal(err)
		}
		if err := s.SetTrustDomain(TrustDomainBundle{TrustDomain: "east.example", Anchors: east.Anchors["anchorage.dev/spiffe"], Sequence: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("no reads happened")
	}
}

// discardWriter is the cheapest ResponseWriter, so that the benchmark
// measures the router and the handler.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

func BenchmarkServeSPIFFEBundle(b *testing.B) {
	r := newRouter(newTestStore(b))
	for _, name := range []string{"200", "304"} {
		b.Run(name, func(b *testing.B) {
			req, err := http.NewRequest(http.MethodGet, "https://hub.example"+bundlePath, nil)
			if err != nil {
				b.Fatal(err)
			}
			w := &discardWriter{h: http.Header{}}
			r.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
			size := w.n
			if name == "304" {
				req.Header.Set("If-None-Match", w.h.Get("ETag"))
			}
			if name == "200" {
				b.SetBytes(int64(size))
			}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				r.ServeHTTP(w, req)
			}
			want := http.StatusOK
			if name == "304" {
				want = http.StatusNotModified
			}
			if w.status != want {
				b.Fatalf("status %d", w.status)
			}
		})
	}
}
