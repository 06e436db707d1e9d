package app

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anchorage-dev/anchorage/pkg/federation"
)

// HTTPServer is the hub's server for its router, with timeouts against
// slow clients; no WriteTimeout, which would cut the long polls short.
// net/http's own messages (failed TLS handshakes, accept errors) go to log
// rather than as unstructured lines on stderr.
func HTTPServer(h http.Handler, tlsCfg *tls.Config, log logr.Logger) *http.Server {
	return &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(logr.ToSlogHandler(log), slog.LevelInfo)}
}

// Middleware is what every hub request goes through: metrics and the
// access log, then panic recovery (inside, so that a panic before the
// answer began is counted and logged as the 500 it answers; one after is
// logged by the recoverer and the connection cut). Exported for the
// well-known benchmark, which measures the hub's real stack.
func Middleware(log logr.Logger, reg prometheus.Registerer) []func(http.Handler) http.Handler {
	return []func(http.Handler) http.Handler{accessLog(log, newHTTPMetrics(reg)), recoverer(log)}
}

// recoverer answers a panic with the hub's JSON error and logs it with its
// stack. http.ErrAbortHandler, net/http's way to abort a response, passes.
func recoverer(log logr.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				rec := recover()
				if rec == nil {
					return
				}
				if rec == http.ErrAbortHandler {
					panic(rec)
				}
				log.Error(fmt.Errorf("panic: %v", rec), "request handler panicked", "method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
				if ww, ok := w.(middleware.WrapResponseWriter); ok && ww.Status() != 0 {
					// The answer has begun: cut it rather than append an error to it.
					panic(http.ErrAbortHandler)
				}
				federation.WriteError(w, http.StatusInternalServerError, "internal error in the hub; retry, and report it with the hub's log if it persists")
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// accessLog logs agent API calls and failures at info, document reads at
// V(1), and counts every request by route and status.
func accessLog(log logr.Logger, m *httpMetrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := chi.RouteContext(r.Context()).RoutePattern()
			if route == "" {
				route = "unmatched"
			}
			d := time.Since(start)
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK // nothing written: net/http sends 200
			}
			m.observe(route, r.Method, status, d)
			l := log.V(1)
			if status >= 400 || chi.URLParam(r, "cluster") != "" && r.Method != http.MethodGet {
				l = log
			}
			if !l.Enabled() {
				return // before the arguments are boxed: most requests are not logged
			}
			l.Info("request", "method", r.Method, "path", r.URL.Path, "status", status, "bytes", ww.BytesWritten(), "duration", d, "remote", r.RemoteAddr)
		})
	}
}

// httpMetrics counts requests by route pattern, method and status code and
// times them by route. Each combination's children are resolved once and
// kept: a request then costs one map read instead of validating and hashing
// its label values twice, which on the well-known documents was a tenth of
// the hub's own share of a request.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	children sync.Map // requestKey → requestMetrics
}

type requestKey struct {
	route, method string
	code          int
}

type requestMetrics struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anchorage_hub_http_requests_total", Help: "HTTP requests by route pattern, method and status code."}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "anchorage_hub_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// observe records one request. route is a chi pattern or "unmatched", and
// code is bounded by net/http, so the label sets are bounded once the
// method is.
func (m *httpMetrics) observe(route, method string, code int, d time.Duration) {
	k := requestKey{route, metricMethod(method), code}
	v, ok := m.children.Load(k)
	if !ok {
		v, _ = m.children.LoadOrStore(k, requestMetrics{
			count:   m.requests.WithLabelValues(k.route, k.method, strconv.Itoa(code)),
			latency: m.latency.WithLabelValues(k.route),
		})
	}
	c := v.(requestMetrics)
	c.count.Inc()
	c.latency.Observe(d.Seconds())
}

// metricMethod is method as a label value: net/http accepts any token as a
// method, and a label taken from the request as it is would let any client
// add series without end.
func metricMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "OTHER"
}
