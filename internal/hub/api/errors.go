package api

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/anchorage-dev/anchorage/pkg/federation"
)

// NotFound answers a path that no hub route serves.
func NotFound(w http.ResponseWriter, _ *http.Request) {
	federation.WriteError(w, http.StatusNotFound, "no such path on the hub: it serves /clusters/<cluster>/..., /trust-domains/<trust domain>/bundle, /apis/v1/members/<cluster>/<call>, /healthz, /readyz and /metrics")
}

// MethodNotAllowed answers 405 with msg and an Allow header naming the
// methods the path does serve (chi gives a custom handler none). A method
// chi does not know reaches it on any path: with nothing allowed, that
// path does not exist.
func MethodNotAllowed(msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		allowed := allowedMethods(r)
		if len(allowed) == 0 {
			NotFound(w, r)
			return
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		federation.WriteError(w, http.StatusMethodNotAllowed, msg)
	}
}

// allowedMethods are the methods the router serving r routes r's path to.
func allowedMethods(r *http.Request) []string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil || rctx.Routes == nil {
		return nil
	}
	// chi routes on the escaped path when there is one.
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		if rctx.Routes.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return out
}
