// Command wellknown measures the hub's well-known endpoint: requests/s and
// p50/p99 latency of GET <issuer>/.well-known/spiffe-bundle served by
// pkg/oidcbundle's Store (pre-serialised body, strong ETag) through the
// hub's own stack (its chi middleware: panic recovery, metrics, access log),
// beside go-spiffe's federation.NewHandler serving the same SPIFFE bundle
// (same anchors, sequence and refresh hint) on another loopback server in
// the same process and the same run. Every server has the hub's
// http.Server settings, so that only the handlers differ.
//
// One member is built with realistic anchors: SPIFFE CAs and a service-dns
// CA from pkg/signers, and a JWKS of one RSA-2048 and one ECDSA P-256 public
// key with kube-apiserver-style kids. The SPIFFE bundle is measured at each
// size of -anchors: a member's CA pool publishes one CA between rotations,
// two (next or retired beside active) through a rotation and until the
// retired CA's last leaf expires, three at most; go-spiffe re-encodes every
// one of them on every request. Scenarios, at each size:
//
//  1. hub GET, 200 with the body;
//  2. hub GET with If-None-Match of the current ETag, 304;
//  3. the floor: a bare handler on a third server writing the hub's
//     response (its headers and bytes) with no router, middleware or
//     lookup, the least any handler serving these bytes through net/http
//     can cost; the hub's distance to it is all its own;
//  4. go-spiffe handler GET, 200 with the body.
//
// The load generator runs in-process: -clients goroutines, each with its own
// keep-alive http.Transport (one connection), looping GET for -duration and
// recording every latency into a slice allocated once; bodies are read in
// full and discarded. Each measurement follows a 1 s warm-up on fresh
// connections. Within each run the scenarios alternate (the order rotates
// from run to run); medians over -runs of the throughput, of p50/p99 and of
// the process's CPU time per request (getrusage: clients and servers
// together, less sensitive than throughput to a noisy, shared machine) are
// printed, then the cost of the handlers alone (testing.Benchmark, no
// network). All servers speak plain HTTP/1.1 on 127.0.0.1, so the comparison
// is of the handlers, not of TLS; -tls serves all over TLS (HTTP/1.1)
// instead. Clients and servers share the machine's cores, unless -pin (with
// -load wrk) gives the servers all cores but the last and wrk the last one:
// then the servers are the bottleneck and their cost alone sets the
// throughput, as when clients come from other machines. -cpuprofile writes
// a profile in which each server's goroutines are labelled.
//
//	go run ./wellknown [-clients 64] [-duration 5s] [-runs 5] [-anchors 1,2,3] [-tls] [-load go|wrk] [-pin] [-cpuprofile file]
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	"github.com/anchorage-dev/anchorage/hack/bench/internal/benchutil"
	"github.com/anchorage-dev/anchorage/pkg/oidcbundle"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

const (
	warmup      = time.Second
	cluster     = "east"
	trustDomain = "east.example"
	sequence    = 7
	refreshHint = 5 * time.Minute
)

func main() {
	clients := flag.Int("clients", 64, "concurrent clients, each with its own keep-alive connection")
	duration := flag.Duration("duration", 5*time.Second, "measured time per scenario and run (after a 1 s warm-up)")
	runs := flag.Int("runs", 5, "repetitions; medians are printed")
	useTLS := flag.Bool("tls", false, "serve every server (hub, floor, go-spiffe) over TLS (HTTP/1.1) instead of plain HTTP/1.1")
	loadGen := flag.String("load", "go", `load generator: "go" (in-process clients) or "wrk" (the wrk command, a separate C process that costs far less CPU per request, so the servers' cost shows)`)
	pin := flag.Bool("pin", false, "with -load wrk: run the servers on all cores but the last and wrk on the last one (Linux, needs taskset)")
	anchors := flag.String("anchors", "1,2,3", "SPIFFE bundle sizes to measure, in X.509 authorities: 1 is a member's CA pool before its first rotation, 2 during and after one (next or retired beside active), 3 all three states")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the measurements to this file; each server's goroutines carry the label server=hub, server=floor or server=go-spiffe (go tool pprof -tagfocus server=hub)")
	flag.Parse()
	if *pin {
		if *loadGen != "wrk" {
			fmt.Fprintln(os.Stderr, "wellknown: -pin needs -load wrk")
			os.Exit(2)
		}
		if err := pinSelf(); err != nil {
			fmt.Fprintln(os.Stderr, "wellknown:", err)
			os.Exit(1)
		}
	}
	if err := run(*clients, *duration, *runs, *useTLS, *loadGen, *anchors, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "wellknown:", err)
		os.Exit(1)
	}
}

// scenario is one contender's request.
type scenario struct {
	name        string
	url         string
	ifNoneMatch string // empty: none
	want        int    // status code every response must have
	tls         *tls.Config
}

// response is a pre-built response: its header and body.
type response struct {
	header http.Header
	body   []byte
}

// result of one measurement.
type result struct {
	rps, p50, p99 float64 // requests/s; latencies in µs
	cpu           float64 // process CPU (clients and server) per request, µs
}

func run(clients int, duration time.Duration, runs int, useTLS bool, loadGen, anchorsFlag, cpuProfile string) error {
	if clients < 1 || runs < 1 || duration <= 0 {
		return errors.New("-clients, -runs and -duration must be positive")
	}
	anchors, err := benchutil.Counts("anchors", anchorsFlag, 1)
	if err != nil {
		return err
	}
	if loadGen != "go" && loadGen != "wrk" {
		return fmt.Errorf(`-load %q: use "go" or "wrk"`, loadGen)
	}
	if loadGen == "wrk" {
		if _, err := exec.LookPath("wrk"); err != nil {
			return errors.New("-load wrk needs the wrk command (Debian: apt-get install wrk)")
		}
	}
	// Listeners first: the hub's URL is part of its documents.
	hubSrv := httptest.NewUnstartedServer(nil)
	floorSrv := httptest.NewUnstartedServer(nil)
	spiffeSrv := httptest.NewUnstartedServer(nil)
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	hubURL := scheme + "://" + hubSrv.Listener.Addr().String()

	benchutil.Progress("building the member's documents")
	store, err := oidcbundle.NewStore(oidcbundle.Options{HubURL: hubURL})
	if err != nil {
		return err
	}
	issuer := store.Issuer(cluster)
	// The member's CA pool at its largest: active, next, retired, ...
	spiffeCAs := make([]*x509.Certificate, slices.Max(anchors))
	for i := range spiffeCAs {
		ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile(cluster, trustDomain, issuer), nil)
		if err != nil {
			return err
		}
		spiffeCAs[i] = ca.Anchor()
	}
	dnsCA, err := signers.NewCA(signers.Env{}, signers.ServiceDNSCAProfile(cluster, "cluster.local", issuer), nil)
	if err != nil {
		return err
	}
	jwks, err := apiserverJWKS()
	if err != nil {
		return err
	}
	r := chi.NewRouter()
	r.Use(hubapp.Middleware(logr.Discard(), prometheus.NewRegistry())...)
	store.Routes(r)

	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	bundle := spiffebundle.New(td) // a bundle source: the handler reads it on every request
	bundle.SetSequenceNumber(sequence)
	bundle.SetRefreshHint(refreshHint)
	h, err := federation.NewHandler(td, bundle)
	if err != nil {
		return err
	}
	// The floor is net/http alone writing the hub's response, its headers
	// and bytes, with no router, middleware or lookup: no handler serving
	// these bytes through net/http can cost less, so the hub can come no
	// closer to go-spiffe than this.
	var floorDoc atomic.Pointer[response]
	floor := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		d := floorDoc.Load()
		maps.Copy(w.Header(), d.header)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(d.body)
	})
	// Every handler gets the hub's http.Server settings (its timeouts cost
	// a little per request), so that only the handlers differ.
	hubSrv.Config = hubapp.HTTPServer(r, nil, logr.Discard())
	floorSrv.Config = hubapp.HTTPServer(floor, nil, logr.Discard())
	spiffeSrv.Config = hubapp.HTTPServer(h, nil, logr.Discard())

	// Connections opened, to check that every client keeps its one
	// connection alive through a measurement.
	var conns atomic.Int64
	for i, s := range []*httptest.Server{hubSrv, floorSrv, spiffeSrv} {
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		}
		// The serving goroutines inherit the label, so that a profile
		// separates the servers.
		pprof.Do(context.Background(), pprof.Labels("server", []string{"hub", "floor", "go-spiffe"}[i]), func(context.Context) {
			if useTLS {
				s.StartTLS() // HTTP/1.1 only unless EnableHTTP2 is set
			} else {
				s.Start()
			}
		})
		defer s.Close()
	}
	var hubTLS, floorTLS, spiffeTLS *tls.Config
	if useTLS {
		hubTLS = hubSrv.Client().Transport.(*http.Transport).TLSClientConfig
		floorTLS = floorSrv.Client().Transport.(*http.Transport).TLSClientConfig
		spiffeTLS = spiffeSrv.Client().Transport.(*http.Transport).TLSClientConfig
	}
	hubBundleURL := issuer + oidcbundle.SPIFFEBundlePath
	floorURL := floorSrv.URL + "/"
	spiffeURL := spiffeSrv.URL + "/"

	transport := "plain HTTP/1.1 keep-alive (no TLS: the handlers are compared, not TLS)"
	if useTLS {
		transport = "HTTPS (TLS 1.3, HTTP/1.1) keep-alive"
	}
	fmt.Printf("Every server: the hub's http.Server settings, %s on 127.0.0.1; %d clients, one connection each; "+
		"%d runs × %v per scenario after a %v warm-up, scenarios alternating; medians over runs.\n",
		transport, clients, runs, duration, warmup)
	switch {
	case loadGen == "wrk" && os.Getenv(pinnedEnv) != "":
		fmt.Printf("Load from wrk (%d threads, a separate process) pinned to CPU %s; the servers run in this process, pinned to the other CPUs (GOMAXPROCS=%d), %s. CPU/request is the servers' alone.\n",
			wrkThreads, os.Getenv(pinnedEnv), runtime.GOMAXPROCS(0), runtime.Version())
	case loadGen == "wrk":
		fmt.Printf("Load from wrk (%d threads, a separate process); the servers run in this process; all share the machine's %d cores (GOMAXPROCS=%d), %s. CPU/request is the servers' alone.\n",
			wrkThreads, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	default:
		fmt.Printf("Clients and the servers run in one process and share the machine's %d cores (GOMAXPROCS=%d), %s.\n",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// Latency slices, allocated once and reused by every measurement.
	lat := make([][]time.Duration, clients)
	for i := range lat {
		lat[i] = make([]time.Duration, 0, 1<<16)
	}
	all := make([]time.Duration, 0, clients<<16)

	for _, n := range anchors {
		if err := store.SetMember(oidcbundle.Member{
			Name:        cluster,
			TrustDomain: trustDomain,
			JWKS:        jwks,
			Anchors: map[string][]*x509.Certificate{
				signers.SPIFFESignerName:     spiffeCAs[:n],
				signers.ServiceDNSSignerName: {dnsCA.Anchor()},
			},
			SPIFFESequence:    sequence,
			SPIFFERefreshHint: refreshHint,
		}); err != nil {
			return err
		}
		bundle.SetX509Authorities(spiffeCAs[:n])
		hubHeader, hubBody, err := checkSameBundle(hubBundleURL, hubTLS, spiffeURL, spiffeTLS, td)
		if err != nil {
			return err
		}
		hubHeader.Del("Date") // net/http writes its own
		floorDoc.Store(&response{header: hubHeader, body: hubBody})
		scenarios := []scenario{
			{name: "hub GET " + oidcbundle.SPIFFEBundlePath + " (200)", url: hubBundleURL, want: http.StatusOK, tls: hubTLS},
			{name: "hub GET with If-None-Match (304)", url: hubBundleURL, ifNoneMatch: hubHeader.Get("ETag"), want: http.StatusNotModified, tls: hubTLS},
			{name: "floor: net/http writing the hub's bytes, no router or middleware (200)", url: floorURL, want: http.StatusOK, tls: floorTLS},
			{name: "go-spiffe federation.NewHandler GET (200)", url: spiffeURL, want: http.StatusOK, tls: spiffeTLS},
		}
		results := make([][]result, len(scenarios))
		for run := range runs {
			for k := range scenarios {
				i := (run + k) % len(scenarios)
				s := scenarios[i]
				benchutil.Progress("%d anchor(s), run %d/%d: %s (%v warm-up, %v measured)", n, run+1, runs, s.name, warmup, duration)
				before := conns.Load()
				var res result
				if loadGen == "wrk" {
					res, err = measureWrk(s, clients, duration)
				} else {
					res, err = measure(s, clients, duration, lat, &all)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				if opened := conns.Load() - before; loadGen == "go" && opened != int64(clients) {
					benchutil.Progress("  note: %d connections opened for %d clients", opened, clients)
				}
				benchutil.Progress("  %.0f req/s, p50 %.0f µs, p99 %.0f µs, %.1f µs CPU/request", res.rps, res.p50, res.p99, res.cpu)
				results[i] = append(results[i], res)
			}
		}

		fmt.Printf("\nSPIFFE bundle with %d X.509 authorit%s, %d bytes:\n\n", n, map[bool]string{true: "y", false: "ies"}[n == 1], len(hubBody))
		printResults(scenarios, results)

		// The handlers alone, without sockets or clients: what the
		// end-to-end figures above are made of on the server side.
		benchutil.Progress("%d anchor(s): measuring the handlers alone (%d runs)", n, runs)
		handlers := []http.Handler{r, r, floor, h}
		fmt.Println("\nThe same requests given straight to the handlers (hub: its chi router and middleware; go-spiffe: its handler), no network, one goroutine:")
		fmt.Println()
		fmt.Println("| scenario | ns/request | allocs/request | bytes allocated/request |")
		fmt.Println("| --- | ---: | ---: | ---: |")
		for i, s := range scenarios {
			ns, allocs, bytes, err := handlerCost(handlers[i], s, runs)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			fmt.Printf("| %s | %d | %d | %d |\n", s.name, ns, allocs, bytes)
		}
	}
	return nil
}

// printResults prints the medians of each scenario's runs and its ratios to
// the last scenario, go-spiffe's.
func printResults(scenarios []scenario, results [][]result) {
	fmt.Println("| scenario | requests/s | p50 | p99 | CPU/request (this process) | throughput vs go-spiffe | same, within runs | p99 vs go-spiffe | CPU/request vs go-spiffe |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	baseRuns := results[len(results)-1]
	base := medians(baseRuns)
	for i, s := range scenarios {
		m := medians(results[i])
		ratio, within, p99ratio, cpuRatio := "—", "—", "—", "—"
		if i < len(scenarios)-1 {
			ratio = fmt.Sprintf("%.2fx", m.rps/base.rps)
			// Each run's scenarios follow one another within seconds,
			// so the median of the runs' own ratios is less sensitive
			// to a machine whose speed drifts.
			var rs []float64
			for j, r := range results[i] {
				rs = append(rs, r.rps/baseRuns[j].rps)
			}
			within = fmt.Sprintf("%.2fx (%.2f–%.2f)", benchutil.Median(rs), slices.Min(rs), slices.Max(rs))
			p99ratio = fmt.Sprintf("%.2fx", m.p99/base.p99)
			cpuRatio = fmt.Sprintf("%.2fx", m.cpu/base.cpu)
		}
		fmt.Printf("| %s | %.0f | %.0f µs | %.0f µs | %.1f µs | %s | %s | %s | %s |\n", s.name, m.rps, m.p50, m.p99, m.cpu, ratio, within, p99ratio, cpuRatio)
	}
}

// handlerCost is the median over runs of testing.Benchmark's cost of one
// ServeHTTP call on a prepared request and a reused ResponseWriter.
func handlerCost(h http.Handler, s scenario, runs int) (ns, allocs, bytes int64, err error) {
	req := httptest.NewRequest(http.MethodGet, s.url, nil)
	if s.ifNoneMatch != "" {
		req.Header.Set("If-None-Match", s.ifNoneMatch)
	}
	w := &discardWriter{h: http.Header{}}
	var nss, as, bs []float64
	for range runs {
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.code = 0
				h.ServeHTTP(w, req)
				if w.code != s.want {
					err = fmt.Errorf("status %d, want %d", w.code, s.want)
					b.FailNow()
				}
			}
		})
		nss, as, bs = append(nss, float64(res.NsPerOp())), append(as, float64(res.AllocsPerOp())), append(bs, float64(res.AllocedBytesPerOp()))
	}
	return int64(benchutil.Median(nss)), int64(benchutil.Median(as)), int64(benchutil.Median(bs)), err
}

// discardWriter is a reusable http.ResponseWriter that keeps the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}

func medians(rs []result) result {
	var rps, p50, p99, cpu []float64
	for _, r := range rs {
		rps, p50, p99, cpu = append(rps, r.rps), append(p50, r.p50), append(p99, r.p99), append(cpu, r.cpu)
	}
	return result{benchutil.Median(rps), benchutil.Median(p50), benchutil.Median(p99), benchutil.Median(cpu)}
}

// measure warms up on fresh connections for one second, then loads s for d.
func measure(s scenario, clients int, d time.Duration, lat [][]time.Duration, all *[]time.Duration) (result, error) {
	transports := make([]*http.Transport, clients)
	for i := range transports {
		transports[i] = &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			DisableCompression:  true,
			TLSClientConfig:     s.tls,
		}
		defer transports[i].CloseIdleConnections()
	}
	if _, err := load(s, transports, warmup, lat); err != nil {
		return result{}, err
	}
	cpu0 := cpuTime()
	elapsed, err := load(s, transports, d, lat)
	if err != nil {
		return result{}, err
	}
	cpu := cpuTime() - cpu0
	merged := (*all)[:0]
	for _, l := range lat {
		merged = append(merged, l...)
	}
	*all = merged
	slices.Sort(merged)
	n := len(merged)
	if n == 0 {
		return result{}, errors.New("no request completed")
	}
	q := func(p float64) float64 { return float64(merged[min(n-1, int(p*float64(n)))]) / 1e3 }
	return result{rps: float64(n) / elapsed.Seconds(), p50: q(0.50), p99: q(0.99), cpu: float64(cpu) / 1e3 / float64(n)}, nil
}

// cpuTime is the user and system CPU time used by the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load runs one goroutine per transport, each looping GET until d has
// passed, and returns the wall time from start to the last response.
func load(s scenario, transports []*http.Transport, d time.Duration, lat [][]time.Duration) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, len(transports))
	start := time.Now()
	deadline := start.Add(d)
	for i, t := range transports {
		lat[i] = lat[i][:0]
		wg.Go(func() {
			c := &http.Client{Transport: t}
			req, err := http.NewRequest(http.MethodGet, s.url, nil)
			if err != nil {
				errs[i] = err
				return
			}
			if s.ifNoneMatch != "" {
				req.Header.Set("If-None-Match", s.ifNoneMatch)
			}
			l := lat[i]
			for {
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					errs[i] = err
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				t1 := time.Now()
				if err != nil {
					errs[i] = err
					return
				}
				if resp.StatusCode != s.want {
					errs[i] = fmt.Errorf("status %d, want %d", resp.StatusCode, s.want)
					return
				}
				l = append(l, t1.Sub(t0))
				if t1.After(deadline) {
					break
				}
			}
			lat[i] = l
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

// checkSameBundle fetches both contenders' bundles, checks that they hold
// the same bundle, and returns the hub's response header, with an ETag, and
// body.
func checkSameBundle(hubURL string, hubTLS *tls.Config, spiffeURL string, spiffeTLS *tls.Config, td spiffeid.TrustDomain) (http.Header, []byte, error) {
	get := func(url string, tc *tls.Config) (*http.Response, []byte, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := c.Get(url)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, body)
		}
		return resp, body, err
	}
	hubResp, hubBody, err := get(hubURL, hubTLS)
	if err != nil {
		return nil, nil, err
	}
	_, spiffeBody, err := get(spiffeURL, spiffeTLS)
	if err != nil {
		return nil, nil, err
	}
	a, err := spiffebundle.Parse(td, hubBody)
	if err != nil {
		return nil, nil, fmt.Errorf("hub bundle: %w", err)
	}
	b, err := spiffebundle.Parse(td, spiffeBody)
	if err != nil {
		return nil, nil, fmt.Errorf("go-spiffe bundle: %w", err)
	}
	if !a.Equal(b) {
		return nil, nil, errors.New("the hub and go-spiffe serve different bundles")
	}
	if !bytes.Equal(hubBody, spiffeBody) {
		benchutil.Progress("note: same bundle, different bytes (%d vs %d)", len(hubBody), len(spiffeBody))
	}
	if hubResp.Header.Get("ETag") == "" {
		return nil, nil, errors.New("the hub sent no ETag")
	}
	return hubResp.Header, hubBody, nil
}

// apiserverJWKS is a JWKS like a kube-apiserver's with two service-account
// keys: RSA-2048 (RS256) and ECDSA P-256 (ES256), kid = base64url(SHA-256
// of the PKIX public key), as kube-apiserver computes it.
func apiserverJWKS() ([]byte, error) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	for _, k := range []struct {
		pub crypto.PublicKey
		alg string
	}{{&rsaKey.PublicKey, "RS256"}, {&ecKey.PublicKey, "ES256"}} {
		der, err := x509.MarshalPKIXPublicKey(k.pub)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(der)
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: base64.RawURLEncoding.EncodeToString(sum[:]), Algorithm: k.alg, Use: "sig"})
	}
	return json.Marshal(set)
}

// wrkThreads: one per core, as wrk's own advice.
const wrkThreads = 2

// measureWrk runs wrk against s (after a warm-up run) and reads its
// requests/s and latency distribution; CPU is this process's, i.e. the
// servers'.
func measureWrk(s scenario, clients int, d time.Duration) (result, error) {
	args := func(d time.Duration) []string {
		a := []string{"-t", strconv.Itoa(wrkThreads), "-c", strconv.Itoa(clients), "-d", fmt.Sprintf("%ds", max(1, int(d.Seconds()))), "--latency"}
		if s.ifNoneMatch != "" {
			a = append(a, "-H", "If-None-Match: "+s.ifNoneMatch)
		}
		return append(a, s.url)
	}
	if out, err := wrkCommand(args(warmup)).CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	cpu0 := cpuTime()
	out, err := wrkCommand(args(d)).CombinedOutput()
	cpu := cpuTime() - cpu0
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	text := string(out)
	if strings.Contains(text, "Non-2xx or 3xx responses") {
		return result{}, fmt.Errorf("wrk saw error responses:\n%s", text)
	}
	var res result
	var total float64
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			res.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			res.p50 = wrkMicros(f[1])
		case len(f) == 2 && f[0] == "99%":
			res.p99 = wrkMicros(f[1])
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			total, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if res.rps == 0 || total == 0 {
		return result{}, fmt.Errorf("could not read wrk's output:\n%s", text)
	}
	res.cpu = float64(cpu) / 1e3 / total
	return res, nil
}

// wrkMicros parses wrk's latency ("812.00us", "1.23ms", "1.02s") into µs.
func wrkMicros(v string) float64 {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			f, _ := strconv.ParseFloat(n, 64)
			return f * u.mult
		}
	}
	return 0
}

// pinnedEnv names the CPU left to wrk once this process has re-executed
// itself pinned to the others.
const pinnedEnv = "ANCHORAGE_WELLKNOWN_WRK_CPU"

// pinSelf re-executes this command under taskset on every CPU but the
// last, which is left to wrk. The Go runtime sizes GOMAXPROCS from the
// affinity it starts with, hence a new process rather than a pinned thread.
func pinSelf() error {
	if os.Getenv(pinnedEnv) != "" {
		return nil
	}
	n := runtime.NumCPU() // this process is not pinned yet: every CPU it may use
	if n < 2 {
		return errors.New("-pin needs at least two CPUs")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return errors.New("-pin needs the taskset command (Debian: util-linux)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	servers := "0"
	if n > 2 {
		servers = fmt.Sprintf("0-%d", n-2)
	}
	env := append(os.Environ(), pinnedEnv+"="+strconv.Itoa(n-1))
	return syscall.Exec(taskset, append([]string{"taskset", "-c", servers, self}, os.Args[1:]...), env)
}

// wrkCommand runs wrk, on the CPU left to it when pinned.
func wrkCommand(args []string) *exec.Cmd {
	if cpu := os.Getenv(pinnedEnv); cpu != "" {
		return exec.Command("taskset", append([]string{"-c", cpu, "wrk"}, args...)...)
	}
	return exec.Command("wrk", args...)
}
