// Command fanout measures the hub's push to many members: -members
// simulated agents long-poll one hub (the real cmd/hub binary, its own
// process, so that its memory is its own), and one member's anchors
// change; the figure is the time from that member's report to the last
// agent holding the new bundle set, beside the hub's RSS.
//
// The shape is hub-and-spoke: member "core" (trust domain core.bench) and
// -members spokes m-0000… (each its own trust domain), every spoke
// federating with core.bench. A change is core reporting a new anchor
// set (PUT report, authenticated like a real agent), alternately adding
// and dropping one anchor. Every spoke speaks the protocol with the agent's
// own client (pkg/federation.Client): GET bundles?after=<seq> with its own
// service-account token
// (ES256, signed with the key of its stored JWKS, verified by go-oidc on
// the hub), then POST ack with the applied digest. The MemberClusters are
// created joined, with their JWKS and anchors, before the hub starts.
//
//	go run ./fanout [-members 1000] [-changes 5]
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	"github.com/anchorage-dev/anchorage/hack/bench/internal/benchutil"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1/crds"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

func main() {
	members := flag.Int("members", 1000, "simulated members long-polling the hub")
	changes := flag.Int("changes", 5, "anchor changes to measure; medians are printed")
	profile = flag.String("cpuprofile", "", "save the hub's CPU profile during the first change to this file (experiments)")
	heapProfile = flag.String("heapprofile", "", "save the hub's heap profile once every member has its first set (experiments)")
	flag.Parse()
	benchutil.QuietLogs(logr.Discard())
	ctx, stop := benchutil.Interruptible(context.Background())
	err := run(ctx, *members, *changes)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

const kid = "bench-key"

var profile, heapProfile *string

type bench struct {
	hubURL string
	http   *http.Client
	key    *ecdsa.PrivateKey
}

func run(ctx context.Context, n, changes int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir, err := os.MkdirTemp("", "anchorage-fanout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cl, stop, err := benchutil.StartClusterWith(ctx, localcluster.Options{Name: "hub", CRDs: crds.All(), Scheme: hubapp.Scheme()})
	if err != nil {
		return err
	}
	defer stop()
	if err := cl.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "anchorage-hub"}}); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	b := &bench{hubURL: "https://127.0.0.1:" + strconv.Itoa(port)}
	if b.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: b.key.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		return err
	}

	benchutil.Progress("registering %d members and core, joined, with anchors", n)
	anchorA, anchorB := newAnchor("core.bench"), newAnchor("core.bench")
	names := []string{"core"}
	for i := range n {
		names = append(names, fmt.Sprintf("m-%04d", i))
	}
	if err := parallel(names, 32, func(name string) error {
		td, fed := name+".bench", []string{"core.bench"}
		anchors := []*x509.Certificate{newAnchor(name + ".bench")}
		if name == "core" {
			fed, anchors = nil, []*x509.Certificate{anchorA}
		}
		mc := &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: hubv1.MemberClusterSpec{
			Issuer: b.hubURL + "/clusters/" + name, TrustDomain: td, FederatesWith: fed, ClusterSet: new(bool)}}
		if err := cl.Client.Create(ctx, mc); err != nil {
			return err
		}
		now := metav1.Now()
		mc.Status.JWKS, mc.Status.LastReportTime, mc.Status.AnchorsSequence = string(jwks), &now, 1
		mc.Status.Anchors = []hubv1.SignerAnchors{{Signer: signers.SPIFFESignerName, PEM: string(signers.EncodeCertificatesPEM(anchors))}}
		meta.SetStatusCondition(&mc.Status.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined})
		return cl.Client.Status().Update(ctx, mc)
	}); err != nil {
		return err
	}

	hubProc, caFile, err := startHub(ctx, cl, dir, b.hubURL)
	if err != nil {
		return err
	}
	defer func() { _ = hubProc.Process.Signal(os.Interrupt); _ = hubProc.Wait() }()
	if b.http, err = httpsClient(caFile, n); err != nil {
		return err
	}
	if err := waitReady(ctx, b); err != nil {
		return err
	}

	// The spokes: each long-polls, records when each sequence arrived,
	// acks, and polls again.
	type arrival struct {
		member string
		seq    int64
		at     time.Time
	}
	arrivals := make(chan arrival, 4*n)
	var acking atomic.Int64 // acks in flight: the hub is busy until they are done
	var wg sync.WaitGroup
	for _, name := range names[1:] {
		wg.Go(func() {
			agent := b.agent(name)
			var after int64
			for ctx.Err() == nil {
				set, err := agent.Bundles(ctx, after)
				if err != nil {
					if ctx.Err() == nil {
						time.Sleep(200 * time.Millisecond)
					}
					continue
				}
				if set == nil {
					continue
				}
				at := time.Now()
				after = set.Sequence
				acking.Add(1)
				arrivals <- arrival{name, set.Sequence, at}
				_ = agent.Ack(ctx, federation.Ack{Sequence: set.Sequence, BundlesDigest: federation.BundlesDigest(set.Bundles)})
				acking.Add(-1)
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	latest := map[string]int64{}
	collect := func(until func() bool, timeout time.Duration) (time.Time, error) {
		var last time.Time
		deadline := time.After(timeout)
		for !until() {
			select {
			case a := <-arrivals:
				latest[a.member] = a.seq
				last = a.at
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			case <-deadline:
				return time.Time{}, fmt.Errorf("%d of %d members answered within %s", len(latest), n, timeout)
			}
		}
		return last, nil
	}
	benchutil.Progress("%d simulated agents long-polling; waiting for every first answer", n)
	if _, err := collect(func() bool { return len(latest) == n }, 3*time.Minute); err != nil {
		return err
	}
	// settle lets the hub go quiet: every ack done, then a second with
	// nothing new, so that each change is measured from an idle hub.
	settle := func() {
		for {
			select {
			case a := <-arrivals:
				latest[a.member] = a.seq
			case <-time.After(time.Second):
				if acking.Load() == 0 {
					return
				}
			}
		}
	}
	settle()
	if *heapProfile != "" {
		fetch(ctx, b, "/debug/pprof/heap", *heapProfile)
	}

	var reach, median []time.Duration
	for c := range changes {
		anchors := []*x509.Certificate{anchorA, anchorB}
		if c%2 == 1 {
			anchors = anchors[:1]
		}
		before := maps(latest)
		start := time.Now()
		if c == 0 && *profile != "" {
			go fetch(ctx, b, "/debug/pprof/profile?seconds=3", *profile)
		}
		rep := federation.Report{Anchors: map[string]string{signers.SPIFFESignerName: string(signers.EncodeCertificatesPEM(anchors))}, JWKS: jwks, AgentVersion: "fanout"}
		if err := b.agent("core").Report(ctx, rep); err != nil {
			return fmt.Errorf("core's report: %w", err)
		}
		var times []time.Duration
		got := map[string]bool{}
		deadline := time.After(time.Minute)
		for len(got) < n {
			select {
			case a := <-arrivals:
				latest[a.member] = a.seq
				if a.seq > before[a.member] && !got[a.member] {
					got[a.member] = true
					times = append(times, a.at.Sub(start))
				}
			case <-ctx.Done():
				return ctx.Err()
			case <-deadline:
				return fmt.Errorf("change %d: %d of %d members got it within a minute", c+1, len(got), n)
			}
		}
		reach = append(reach, slices.Max(times))
		median = append(median, benchutil.Median(times))
		benchutil.Progress("change %d/%d: all %d members in %v (median member %v)", c+1, changes, n, slices.Max(times).Round(time.Millisecond), benchutil.Median(times).Round(time.Millisecond))
		settle()
	}
	rss, hwm := procMemory(hubProc.Process.Pid)
	fmt.Printf("fan-out to %d members over %d changes: all reached in %v (median of changes; each change's median member %v); hub RSS %d MiB (peak %d MiB)\n",
		n, changes, benchutil.Median(reach).Round(time.Millisecond), benchutil.Median(median).Round(time.Millisecond), rss>>20, hwm>>20)
	return nil
}

// fetch saves one of the hub's profiles (-cpuprofile, -heapprofile).
func fetch(ctx context.Context, b *bench, profile, path string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.hubURL+profile, nil)
	resp, err := b.http.Do(req)
	if err != nil {
		benchutil.Progress("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, raw, 0o644)
}

func maps(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// token is a projected service-account token of member's agent, as its
// apiserver would sign it.
func (b *bench) token(member string) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: b.key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": b.hubURL + "/clusters/" + member, "aud": []string{b.hubURL}, "sub": "system:serviceaccount:anchorage-system:member-agent",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	jws, err := signer.Sign(claims)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// agent is member's client of the agent API, as the real agent uses it.
func (b *bench) agent(member string) *federation.Client {
	return &federation.Client{HubURL: b.hubURL, Cluster: member, HTTP: b.http,
		Token: func(context.Context) (string, error) { return b.token(member) }}
}

// startHub runs the real hub binary against the hub cluster.
func startHub(ctx context.Context, cl *localcluster.Cluster, dir, hubURL string) (*exec.Cmd, string, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return nil, "", err
	}
	bin := filepath.Join(dir, "hub")
	benchutil.Progress("building cmd/hub")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/hub")
	build.Dir, build.Stderr = root, os.Stderr
	if err := build.Run(); err != nil {
		return nil, "", fmt.Errorf("building cmd/hub: %w", err)
	}
	kubeconfig := filepath.Join(dir, "hub.kubeconfig")
	if err := cl.WriteKubeconfig(kubeconfig); err != nil {
		return nil, "", err
	}
	caFile := filepath.Join(dir, "hub-ca.pem")
	addr := strings.TrimPrefix(hubURL, "https://")
	cmd := exec.CommandContext(ctx, bin, "--external-url", hubURL, "--listen-address", addr, "--kubeconfig", kubeconfig,
		"--dev-ca-file", caFile, "--leader-elect=false", "--kube-api-qps", "2000", "--kube-api-burst", "4000", "--zap-log-level", "error", "--profiling")
	logFile, err := os.Create(filepath.Join(dir, "hub.log"))
	if err != nil {
		return nil, "", err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	benchutil.Progress("starting the hub (logs in %s)", logFile.Name())
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	return cmd, caFile, nil
}

func waitReady(ctx context.Context, b *bench) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.hubURL+"/readyz", nil)
		if resp, err := b.http.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.New("the hub did not get ready within a minute (see hub.log)")
}

func httpsClient(caFile string, conns int) (*http.Client, error) {
	var pem []byte
	var err error
	for range 100 { // the hub writes its CA file as it starts
		if pem, err = os.ReadFile(caFile); err == nil && len(pem) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("the hub wrote no CA file: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: 2 * conns,
	}}, nil
}

func newAnchor(td string) *x509.Certificate {
	ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile("bench", td, "https://hub.invalid/clusters/bench"), nil)
	if err != nil {
		panic(err)
	}
	return ca.Certificate
}

func parallel(items []string, workers int, f func(string) error) error {
	ch := make(chan string)
	errs := make(chan error, len(items))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for it := range ch {
				if err := f(it); err != nil {
					errs <- fmt.Errorf("%s: %w", it, err)
				}
			}
		})
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
	close(errs)
	return errors.Join(slices.Collect(func(yield func(error) bool) {
		for e := range errs {
			if !yield(e) {
				return
			}
		}
	})...)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// procMemory reads VmRSS and VmHWM (bytes) of pid.
func procMemory(pid int) (rss, hwm int64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = kb << 10
			} else {
				hwm = kb << 10
			}
		}
	}
	return rss, hwm
}
