// Command issuance measures how fast PodCertificateRequests are issued on
// one real kube-apiserver, for three contenders given the same N requests
// (with their Pods), created before the contender starts:
//
//   - ceiling: the apiserver's own status-write ceiling — statuses computed
//     beforehand, written by parallel unthrottled clients;
//   - anchorage: the member agent with its default flags;
//   - hermetic: Kubernetes' own test signer (hermeticpodcertificatesigner),
//     given the same client rate limits as the agent.
//
// Time is from the contender's start to the moment an informer has seen all
// N requests Issued. Runs are interleaved; medians are printed.
//
//	go run ./issuance [-n 1000] [-runs 3]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap/zapcore"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/test/utils/hermeticpodcertificatesigner"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/hack/bench/internal/benchutil"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

func main() {
	n := flag.Int("n", 1000, "requests per run")
	runs := flag.Int("runs", 3, "runs per contender; medians are printed")
	workers := flag.Int("workers", 0, "override the agent's --workers (experiments; 0 = the agent's default)")
	agentLogs := flag.Bool("agent-logs", false, "show the agent's logs on stderr (experiments)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process during the agent's timed runs to this file")
	only := flag.String("only", "", `run one contender: "ceiling", "anchorage" or "hermetic" (experiments; ratios need all three)`)
	flag.Parse()
	components := logr.Discard()
	if *agentLogs {
		components = zap.New(zap.WriteTo(os.Stderr), zap.UseFlagOptions(&zap.Options{TimeEncoder: zapcore.ISO8601TimeEncoder}))
	}
	benchutil.QuietLogs(components)
	ctx, stop := benchutil.Interruptible(context.Background())
	err := run(ctx, *n, *runs, *workers, *cpuProfile, *only)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "issuance:", err)
		os.Exit(1)
	}
}

type contender struct {
	key, name, signer string
	// setup does the untimed work (building the signer, precomputing the
	// ceiling's statuses) and returns start, which is timed: it begins
	// issuing and returns a function that stops it.
	setup func(ctx context.Context, ns, signer string) (start func() (stop func()), err error)
}

type bench struct {
	cl       *localcluster.Cluster
	fast     kubernetes.Interface // unthrottled, for setup and the ceiling
	node     *corev1.Node
	n        int
	watcher  *issuedWatcher
	agentCfg *rest.Config
	workers  int
}

// settle is the pause between a run's setup and its start.
const settle = time.Second

func run(ctx context.Context, n, runs, workers int, cpuProfile, only string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cl, stop, err := benchutil.StartCluster(ctx, app.Scheme())
	if err != nil {
		return err
	}
	defer stop()

	fastCfg := rest.CopyConfig(cl.Config)
	fastCfg.QPS = -1 // no client-side limit: the apiserver is the only bound
	// Protobuf, the cheapest encoding for the apiserver (controller-runtime,
	// and so the agent, use it for built-in types too).
	fastCfg.ContentType = "application/vnd.kubernetes.protobuf"
	b := &bench{cl: cl, n: n, fast: kubernetes.NewForConfigOrDie(fastCfg), agentCfg: cl.Config, workers: workers}
	if b.node, err = b.fast.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// deploy/member creates the agent's namespace (its Lease and CA pools).
	if _, err := b.fast.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app.NewOptions().Namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// The apiserver creates a CRD's storage on the first request for it,
	// which takes about a second once; every real cluster has paid that
	// long before a signer starts, so pay it before timing anyone.
	for _, gvr := range []string{"/apis/multicluster.x-k8s.io/v1beta1/serviceexports", "/apis/multicluster.x-k8s.io/v1alpha1/serviceexports"} {
		if err := b.fast.Discovery().RESTClient().Get().AbsPath(gvr).Do(ctx).Error(); err != nil {
			return fmt.Errorf("warming %s: %w", gvr, err)
		}
	}
	if b.watcher, err = newIssuedWatcher(ctx, b.fast); err != nil {
		return err
	}

	opts := app.NewOptions()
	if workers > 0 {
		opts.Workers = workers
	}
	contenders := []contender{
		{key: "ceiling", name: "ceiling (precomputed status writes, 32 unthrottled protobuf clients)", signer: "ceiling.bench.anchorage.dev/spiffe", setup: b.ceiling},
		{key: "anchorage", name: fmt.Sprintf("anchorage member agent (defaults: %d workers/signer, %.0f QPS, burst %d)", opts.Workers, opts.KubeAPIQPS, opts.KubeAPIBurst), signer: signers.SPIFFESignerName, setup: b.anchorage},
		{key: "hermetic", name: fmt.Sprintf("hermeticpodcertificatesigner (same %.0f QPS, burst %d)", opts.KubeAPIQPS, opts.KubeAPIBurst), signer: "hermetic.bench.anchorage.dev/spiffe", setup: b.hermetic},
	}
	var profile *os.File
	if cpuProfile != "" {
		if profile, err = os.Create(cpuProfile); err != nil {
			return err
		}
		defer profile.Close()
	}
	times := make([][]time.Duration, len(contenders))
	cpus := make([][]time.Duration, len(contenders))
	srvs := make([][]time.Duration, len(contenders))
	for r := range runs {
		for i, c := range contenders {
			if only != "" && c.key != only {
				continue
			}
			ns := fmt.Sprintf("c%d-run%d", i, r)
			benchutil.Progress("run %d/%d: %s: creating %d pods and requests", r+1, runs, c.name, n)
			if err := b.prepare(ctx, ns, c.signer); err != nil {
				return err
			}
			start, err := c.setup(ctx, ns, c.signer)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			// Every contender starts on a quiet apiserver: without this the
			// ceiling, whose setup signs N certificates first, would start
			// later after the creation burst than the signers, which start
			// at once.
			time.Sleep(settle)
			runtime.GC()
			done := b.watcher.expect(ns, n)
			profiled := profile != nil && c.signer == signers.SPIFFESignerName && r == runs-1
			if profiled {
				if err := pprof.StartCPUProfile(profile); err != nil {
					return err
				}
			}
			cpu0 := processCPU()
			srv0 := serverCPU()
			began := time.Now()
			stop := start()
			select {
			case <-done:
			case <-ctx.Done():
				stop()
				return ctx.Err()
			case <-time.After(10 * time.Minute):
				stop()
				return fmt.Errorf("%s: only %d of %d issued after 10 minutes", c.name, b.watcher.count(ns), n)
			}
			took := time.Since(began)
			cpu := processCPU() - cpu0
			srv := serverCPU() - srv0
			// Where the time went: a dip in the timeline with idle CPU is a
			// stall; no idle CPU means the machine was the bound.
			benchutil.Progress("  issued per 100 ms: %v", b.watcher.timeline(ns, began, 100*time.Millisecond))
			benchutil.Progress("  apiserver+etcd CPU %v, this process %v, idle %v", srv.Round(time.Millisecond), cpu.Round(time.Millisecond),
				(time.Duration(runtime.NumCPU())*took - cpu - srv).Round(time.Millisecond))
			if profiled {
				pprof.StopCPUProfile()
			}
			stop()
			cpus[i] = append(cpus[i], cpu)
			srvs[i] = append(srvs[i], srv)
			// Real clusters garbage-collect requests after 15 minutes (the
			// kube-controller-manager's cleaner, absent here); leftovers
			// would burden every later run's lists, so each run cleans up.
			if err := b.cleanup(ctx, ns); err != nil {
				return err
			}
			benchutil.Progress("run %d/%d: %s: %d issued in %v (first after %v), client CPU %v", r+1, runs, c.name, n, took.Round(time.Millisecond), b.watcher.first(ns).Sub(began).Round(time.Millisecond), cpu.Round(time.Millisecond))
			times[i] = append(times[i], took)
		}
	}

	med := make([]time.Duration, len(times))
	for i := range times {
		if len(times[i]) > 0 {
			med[i] = benchutil.Median(times[i])
		}
	}
	fmt.Printf("N = %d PodCertificateRequests (with their Pods) per run, %d runs, one kube-apiserver v1.37.1 on %d cores\n\n", n, runs, runtime.NumCPU())
	fmt.Println("| contender | median time to all Issued | certificates/s | runs (s) | client CPU (median) | apiserver+etcd CPU (median) |")
	fmt.Println("| --- | ---: | ---: | --- | ---: | ---: |")
	for i, c := range contenders {
		if len(times[i]) == 0 {
			continue
		}
		fmt.Printf("| %s | %.2f s | %.0f | %s | %.2f s | %.2f s |\n", c.name, med[i].Seconds(), float64(n)/med[i].Seconds(), fmtRuns(times[i]),
			benchutil.Median(cpus[i]).Seconds(), benchutil.Median(srvs[i]).Seconds())
	}
	if only != "" {
		return nil
	}
	fmt.Printf("\nanchorage / ceiling: %.2fx the ceiling's time\nhermetic / anchorage: anchorage is %.1fx faster\n",
		float64(med[1])/float64(med[0]), float64(med[2])/float64(med[1]))
	// The same ratios within each run (the contenders of a run follow each
	// other on the same apiserver): the machine's drift between runs cancels.
	fmt.Printf("within each run: anchorage / ceiling %s (median %.2fx); hermetic / anchorage %s (median %.1fx)\n",
		fmtRatios(times[1], times[0]), medianRatio(times[1], times[0]), fmtRatios(times[2], times[1]), medianRatio(times[2], times[1]))
	return nil
}

// processCPU is the CPU time (user+system) this process has used: the
// signer's cost, with the watcher's and the setup's shared by all.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ratios(a, b []time.Duration) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = float64(a[i]) / float64(b[i])
	}
	return out
}

func medianRatio(a, b []time.Duration) float64 { return benchutil.Median(ratios(a, b)) }

func fmtRatios(a, b []time.Duration) string {
	var s []string
	for _, r := range ratios(a, b) {
		s = append(s, fmt.Sprintf("%.2f", r))
	}
	return strings.Join(s, ", ")
}

func fmtRuns(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.2f", d.Seconds())
	}
	return s
}

// prepare creates n Pods and their requests for signer in ns, the way the
// kubelet would (fresh ECDSA P-256 key, stub CSR), and waits until the
// watcher has seen every request.
func (b *bench) prepare(ctx context.Context, ns, signer string) error {
	if err := b.create(ctx, ns, signer); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return b.watcher.seenCount(ns) >= b.n, nil
	})
}

// create makes the pods and requests of prepare.
func (b *bench) create(ctx context.Context, ns, signer string) error {
	if _, err := b.fast.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	return parallel(b.n, func(i int) error {
		pod, err := b.fast.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%05d", i)},
			Spec: corev1.PodSpec{NodeName: b.node.Name, ServiceAccountName: "default",
				Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		_, csr, err := kubeletsim.NewKeyAndCSR("ECDSAP256")
		if err != nil {
			return err
		}
		_, err = b.fast.CertificatesV1().PodCertificateRequests(ns).Create(ctx, &certsv1.PodCertificateRequest{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "req-"},
			Spec: certsv1.PodCertificateRequestSpec{
				SignerName: signer, PodName: pod.Name, PodUID: pod.UID,
				ServiceAccountName: "default", ServiceAccountUID: "00000000-0000-0000-0000-00000000beef",
				NodeName: "bench-node", NodeUID: b.node.UID, MaxExpirationSeconds: ptr.To[int32](86400), StubPKCS10Request: csr,
			},
		}, metav1.CreateOptions{})
		return err
	})
}

// cleanup deletes a run's requests and pods.
func (b *bench) cleanup(ctx context.Context, ns string) error {
	if err := b.fast.CertificatesV1().PodCertificateRequests(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("deleting the run's requests: %w", err)
	}
	grace := int64(0)
	if err := b.fast.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("deleting the run's pods: %w", err)
	}
	return nil
}

// ceiling writes precomputed Issued statuses with 32 parallel unthrottled
// clients: what the apiserver itself can take.
func (b *bench) ceiling(ctx context.Context, ns, _ string) (func() func(), error) {
	list, err := b.fast.CertificatesV1().PodCertificateRequests(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile("bench", "bench.example", "https://bench.invalid/clusters/bench"), nil)
	if err != nil {
		return nil, err
	}
	ca.State = signers.StateActive
	pool := &signers.Pool{Signer: signers.SPIFFESignerName, CAs: []*signers.CA{ca}}
	td := spiffeid.RequireTrustDomainFromString("bench.example")
	statuses := make([]*certsv1.PodCertificateRequest, len(list.Items))
	for i := range list.Items {
		req := list.Items[i].DeepCopy()
		pub, err := signers.PublicKeyFromCSR(req.Spec.StubPKCS10Request)
		if err != nil {
			return nil, err
		}
		tmpl, err := signers.SPIFFELeaf(td, ns, "default")
		if err != nil {
			return nil, err
		}
		// Valid for a while: the writes happen within seconds.
		iss, err := signers.Sign(signers.Env{}, pool, "https://bench.invalid/clusters/bench", tmpl, pub, 86400)
		if err != nil {
			return nil, err
		}
		req.Status.CertificateChain = string(iss.ChainPEM())
		req.Status.NotBefore, req.Status.NotAfter, req.Status.BeginRefreshAt = &metav1.Time{Time: iss.NotBefore}, &metav1.Time{Time: iss.NotAfter}, &metav1.Time{Time: iss.BeginRefreshAt}
		meta.SetStatusCondition(&req.Status.Conditions, metav1.Condition{Type: certsv1.PodCertificateRequestConditionTypeIssued, Status: metav1.ConditionTrue, Reason: "Issued", Message: "precomputed"})
		statuses[i] = req
	}
	return func() func() {
		go func() {
			if err := parallel(len(statuses), func(i int) error {
				_, err := b.fast.CertificatesV1().PodCertificateRequests(ns).UpdateStatus(ctx, statuses[i], metav1.UpdateOptions{})
				return err
			}); err != nil {
				benchutil.Progress("ceiling: %v", err)
			}
		}()
		return func() {}
	}, nil
}

// anchorage runs the member agent with its default flags.
func (b *bench) anchorage(ctx context.Context, _, _ string) (func() func(), error) {
	opts := app.NewOptions()
	opts.ClusterName, opts.TrustDomain = "bench", "bench.example"
	if b.workers > 0 {
		opts.Workers = b.workers
	}
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	agentCtx, cancel := context.WithCancel(ctx)
	a, err := app.New(ctrl.LoggerInto(agentCtx, ctrl.Log.WithName("agent")), opts, b.agentCfg)
	if err != nil {
		cancel()
		return nil, err
	}
	return func() func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := a.Start(agentCtx); err != nil {
				benchutil.Progress("agent: %v", err)
			}
		}()
		return func() { cancel(); <-done }
	}, nil
}

// hermetic runs Kubernetes' test signer with the agent's client limits.
func (b *bench) hermetic(ctx context.Context, _, signer string) (func() func(), error) {
	opts := app.NewOptions()
	cfg := rest.CopyConfig(b.agentCfg)
	cfg.QPS, cfg.Burst = opts.KubeAPIQPS, opts.KubeAPIBurst
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	keys, certs, err := hermeticpodcertificatesigner.GenerateCAHierarchy(1)
	if err != nil {
		return nil, err
	}
	c := hermeticpodcertificatesigner.New(clock.RealClock{}, signer, "cluster.local", keys, certs, kc)
	return func() func() {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); c.Run(runCtx) }()
		return func() { cancel(); <-done }
	}, nil
}

// issuedWatcher counts Issued requests per namespace with one informer.
type issuedWatcher struct {
	mu      sync.Mutex
	seen    map[string]map[string]bool // every request, by namespace
	issued  map[string]map[string]bool
	waiters map[string]chan struct{}
	want    map[string]int
	times   map[string][]time.Time
}

func newIssuedWatcher(ctx context.Context, cs kubernetes.Interface) (*issuedWatcher, error) {
	w := &issuedWatcher{seen: map[string]map[string]bool{}, issued: map[string]map[string]bool{}, waiters: map[string]chan struct{}{}, want: map[string]int{}, times: map[string][]time.Time{}}
	f := informers.NewSharedInformerFactory(cs, 0)
	inf := f.Certificates().V1().PodCertificateRequests().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    w.observe,
		UpdateFunc: func(_, o any) { w.observe(o) },
	}); err != nil {
		return nil, err
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	return w, nil
}

func (w *issuedWatcher) observe(obj any) {
	req, ok := obj.(*certsv1.PodCertificateRequest)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[req.Namespace] == nil {
		w.seen[req.Namespace] = map[string]bool{}
	}
	w.seen[req.Namespace][req.Name] = true
	if !meta.IsStatusConditionTrue(req.Status.Conditions, certsv1.PodCertificateRequestConditionTypeIssued) {
		return
	}
	if w.issued[req.Namespace] == nil {
		w.issued[req.Namespace] = map[string]bool{}
	}
	if w.issued[req.Namespace][req.Name] {
		return
	}
	w.issued[req.Namespace][req.Name] = true
	w.times[req.Namespace] = append(w.times[req.Namespace], time.Now())
	if ch, ok := w.waiters[req.Namespace]; ok && len(w.issued[req.Namespace]) >= w.want[req.Namespace] {
		close(ch)
		delete(w.waiters, req.Namespace)
	}
}

// expect returns a channel closed once n requests of ns are Issued.
func (w *issuedWatcher) expect(ns string, n int) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	if len(w.issued[ns]) >= n {
		close(ch)
		return ch
	}
	w.waiters[ns], w.want[ns] = ch, n
	return ch
}

func (w *issuedWatcher) first(ns string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.times[ns]) == 0 {
		return time.Time{}
	}
	return w.times[ns][0]
}

// timeline is how many requests of ns were Issued in each step since t0.
func (w *issuedWatcher) timeline(ns string, t0 time.Time, step time.Duration) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int
	for _, t := range w.times[ns] {
		i := max(0, int(t.Sub(t0)/step))
		for len(out) <= i {
			out = append(out, 0)
		}
		out[i]++
	}
	return out
}

func (w *issuedWatcher) seenCount(ns string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen[ns])
}

func (w *issuedWatcher) count(ns string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.issued[ns])
}

func parallel(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		first atomic.Value
	)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

// serverCPU is the CPU time used so far by this process's children (the
// kube-apiserver and etcd it started), read from /proc: a child's time
// reaches getrusage only once it exits.
func serverCPU() time.Duration {
	const tick = 10 * time.Millisecond // USER_HZ, 100 on every Linux
	self := strconv.Itoa(os.Getpid())
	var total time.Duration
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: fields after the comm,
		// which may hold spaces.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 13 || f[1] != self {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * tick
	}
	return total
}
