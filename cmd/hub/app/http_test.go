package app

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/anchorage-dev/anchorage/internal/hub/api"
	"github.com/anchorage-dev/anchorage/pkg/oidcbundle"
)

// The request metrics are labelled by route pattern, a bounded method and
// the status, and stay right when their children come from the cache.
func TestMiddlewareMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := chi.NewRouter()
	r.Use(Middleware(logr.Discard(), reg)...)
	r.Handle("/clusters/{cluster}/doc", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	r.Get("/silent", func(http.ResponseWriter, *http.Request) {}) // net/http answers 200
	for _, req := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/clusters/east/doc", http.StatusNoContent},
		{http.MethodGet, "/clusters/west/doc", http.StatusNoContent},
		{http.MethodHead, "/clusters/east/doc", http.StatusNoContent},
		// Any token is a method to net/http; chi refuses those it does
		// not know.
		{"BREW", "/clusters/east/doc", http.StatusMethodNotAllowed},
		{"X-RANDOM-1", "/clusters/east/doc", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nowhere", http.StatusNotFound},
		{http.MethodGet, "/silent", http.StatusOK},
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(req.method, req.path, nil))
		if w.Code != req.want {
			t.Fatalf("%s %s: status %d, want %d", req.method, req.path, w.Code, req.want)
		}
	}

	const want = `
# HELP anchorage_hub_http_requests_total HTTP requests by route pattern, method and status code.
# TYPE anchorage_hub_http_requests_total counter
anchorage_hub_http_requests_total{code="204",method="GET",route="/clusters/{cluster}/doc"} 2
anchorage_hub_http_requests_total{code="204",method="HEAD",route="/clusters/{cluster}/doc"} 1
anchorage_hub_http_requests_total{code="200",method="GET",route="/silent"} 1
anchorage_hub_http_requests_total{code="404",method="GET",route="unmatched"} 1
anchorage_hub_http_requests_total{code="405",method="OTHER",route="unmatched"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "anchorage_hub_http_requests_total"); err != nil {
		t.Error(err)
	}
	// One latency series per route, holding every request to it.
	if n := testutil.CollectAndCount(reg, "anchorage_hub_http_request_duration_seconds"); n != 3 {
		t.Errorf("%d latency series, want 3 (one per route)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "anchorage_hub_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
		}
	}
	if counts["/clusters/{cluster}/doc"] != 3 || counts["unmatched"] != 3 {
		t.Errorf("latency sample counts by route = %v, want 3 for the document route and 3 unmatched", counts)
	}
}

// net/http's own messages, such as a failed TLS handshake, go to the hub's
// logger rather than as unstructured lines on stderr.
func TestHTTPServerLogsThroughLogger(t *testing.T) {
	var mu sync.Mutex
	var logged []string
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{})
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = HTTPServer(http.NotFoundHandler(), nil, log)
	srv.StartTLS()
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // plain HTTP to a TLS port
	_, _ = io.Copy(io.Discard, conn)                    // until the server hangs up
	conn.Close()

	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		all := strings.Join(logged, "\n")
		mu.Unlock()
		if strings.Contains(all, `"msg"="http: TLS handshake error from `) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS handshake error logged through the logger; logged: %q", all)
		}
	}
}

// Every 404 and 405 of the hub, inside and outside the mounted routes, is
// a JSON error, and a 405 names the allowed methods.
func TestRouterErrorsAreJSON(t *testing.T) {
	store, err := oidcbundle.NewStore(oidcbundle.Options{HubURL: "https://hub.example"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(logr.Discard(), prometheus.NewRegistry(), store, &api.Handler{}, make(chan struct{}), false)
	const (
		hub404   = `{"error":"no such path on the hub: it serves /clusters/<cluster>/..., /trust-domains/<trust domain>/bundle, /apis/v1/members/<cluster>/<call>, /healthz, /readyz and /metrics"}` + "\n"
		hub405   = `{"error":"method not allowed on this path; the Allow header lists the methods that are"}` + "\n"
		agent404 = `{"error":"no such agent API call; the calls are POST join, PUT report, GET bundles and POST ack"}` + "\n"
		agent405 = `{"error":"method not allowed: join is POST, report is PUT, bundles is GET, ack is POST"}` + "\n"
	)
	for _, tc := range []struct {
		method, path string
		status       int
		allow, body  string
	}{
		{http.MethodGet, "/apis/v1/members/", http.StatusNotFound, "", hub404},
		{http.MethodGet, "/clusters", http.StatusNotFound, "", hub404},
		{http.MethodGet, "/nowhere", http.StatusNotFound, "", hub404},
		{"BREW", "/nowhere", http.StatusNotFound, "", hub404},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "GET", hub405},
		{"BREW", "/healthz", http.StatusMethodNotAllowed, "GET", hub405},
		{http.MethodDelete, "/readyz", http.StatusMethodNotAllowed, "GET", hub405},
		{http.MethodGet, "/apis/v1/members/east/report", http.StatusMethodNotAllowed, "PUT", agent405},
		{http.MethodPut, "/apis/v1/members/east/join", http.StatusMethodNotAllowed, "POST", agent405},
		{http.MethodPost, "/apis/v1/members/east/promote", http.StatusNotFound, "", agent404},
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.status || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Allow") != tc.allow || w.Body.String() != tc.body {
			t.Errorf("%s %s: %d, Content-Type %q, Allow %q, body %q; want %d, application/json, Allow %q, body %q",
				tc.method, tc.path, w.Code, w.Header().Get("Content-Type"), w.Header().Get("Allow"), w.Body.String(), tc.status, tc.allow, tc.body)
		}
	}
}

// A panic answers the hub's JSON 500 and is counted as one; a panic after
// the answer began aborts the response rather than append to it.
func TestMiddlewareRecoversPanicsAsJSON(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := chi.NewRouter()
	r.Use(Middleware(logr.Discard(), reg)...)
	r.Get("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	r.Get("/late", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		panic("late")
	})

	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/boom", nil))
	const want = `{"error":"internal error in the hub; retry, and report it with the hub's log if it persists"}` + "\n"
	if w.Code != http.StatusInternalServerError || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != want {
		t.Errorf("panic: %d, Content-Type %q, body %q; want 500, application/json, %q", w.Code, w.Header().Get("Content-Type"), w.Body.String(), want)
	}
	const counted = `
# HELP anchorage_hub_http_requests_total HTTP requests by route pattern, method and status code.
# TYPE anchorage_hub_http_requests_total counter
anchorage_hub_http_requests_total{code="500",method="GET",route="/boom"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(counted), "anchorage_hub_http_requests_total"); err != nil {
		t.Error(err)
	}

	defer func() {
		if rec := recover(); rec != http.ErrAbortHandler {
			t.Errorf("a panic after the answer began: recovered %v, want http.ErrAbortHandler", rec)
		}
	}()
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/late", nil))
}
