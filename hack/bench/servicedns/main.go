// Command servicedns measures the service-dns signer's pod→Service lookup
// as a namespace grows to 10,000 Services, against a real apiserver's
// informer cache: the signer's indexed lookup beside the brute force (list
// the namespace, test every selector).
//
//	go run ./servicedns [-sizes 10,1000,10000] [-runs 5]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/hack/bench/internal/benchutil"
	"github.com/anchorage-dev/anchorage/internal/agent/profiles"
)

func main() {
	sizesFlag := flag.String("sizes", "10,1000,10000", "Service counts to measure, ascending")
	runs := flag.Int("runs", 5, "repetitions per measurement; the median is printed")
	flag.Parse()
	benchutil.QuietLogs(logr.Discard())
	ctx, stop := benchutil.Interruptible(context.Background())
	err := run(ctx, *sizesFlag, *runs)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "servicedns:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, sizesFlag string, runs int) error {
	sizes, err := benchutil.Counts("sizes", sizesFlag, 2)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cl, stop, err := benchutil.StartCluster(ctx, app.Scheme())
	if err != nil {
		return err
	}
	defer stop()

	c, err := cache.New(cl.Config, cache.Options{Scheme: cl.Scheme})
	if err != nil {
		return err
	}
	if err := c.IndexField(ctx, &corev1.Service{}, profiles.SelectorIndex, profiles.IndexServiceSelector); err != nil {
		return err
	}
	const ns = "big"
	var seen atomic.Int64
	inf, err := c.GetInformer(ctx, &corev1.Service{})
	if err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if s, ok := obj.(*corev1.Service); ok && s.Namespace == ns {
			seen.Add(1)
		}
	}}); err != nil {
		return err
	}
	go func() { _ = c.Start(ctx) }()
	c.WaitForCacheSync(ctx)
	if err := cl.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-0", Labels: map[string]string{
		"app": "web", "tier": "frontend", "pod-template-hash": "5d8f7c9b6", "version": "v3"}}}
	profile := &profiles.ServiceDNS{Reader: c, ClusterName: "east", ClusterDomain: "cluster.local", Clusterset: profiles.StaticClusterset(false)}

	created := 0
	grow := func(to int) error {
		benchutil.Progress("creating Services %d..%d", created, to)
		var wg sync.WaitGroup
		var firstErr atomic.Value
		work := make(chan int)
		for range 32 {
			wg.Go(func() {
				for i := range work {
					// Two ClusterIP Services select the pod; the others, headless
					// (no IP to allocate, same lookup), select other apps — a
					// namespace full of unrelated workloads.
					svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%05d", i)},
						Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%05d", i)}, ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 80}}}}
					if i < 2 {
						svc.Spec.Selector = map[string]string{"app": "web", "tier": "frontend"}
						svc.Spec.ClusterIP = ""
					}
					if err := cl.Client.Create(ctx, svc); err != nil {
						firstErr.CompareAndSwap(nil, err)
					}
				}
			})
		}
		for i := created; i < to; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		created = to
		for deadline := time.Now().Add(2 * time.Minute); seen.Load() < int64(to); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("the cache saw %d of %d Services", seen.Load(), to)
			}
		}
		return nil
	}

	measure := func(f func() error) (time.Duration, error) {
		var ferr error
		var samples []time.Duration
		for range runs {
			r := testing.Benchmark(func(b *testing.B) {
				for b.Loop() {
					if err := f(); err != nil {
						ferr = err
						b.FailNow()
					}
				}
			})
			samples = append(samples, time.Duration(r.NsPerOp()))
		}
		return benchutil.Median(samples), ferr
	}
	indexed := func() error {
		names, err := profile.Names(ctx, pod, "")
		if err == nil && len(names) != 4 {
			err = fmt.Errorf("got names %v", names)
		}
		return err
	}
	bruteForce := func() error {
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		k := 0
		for i := range list.Items {
			if s := list.Items[i].Spec.Selector; len(s) > 0 && labels.SelectorFromSet(s).Matches(labels.Set(pod.Labels)) {
				k++
			}
		}
		if k != 2 {
			return fmt.Errorf("matched %d Services", k)
		}
		return nil
	}

	fmt.Printf("| Services in the namespace | indexed lookup (median) | vs %d Services | list-and-match (median) | list-and-match / indexed |\n", sizes[0])
	fmt.Println("| ---: | ---: | ---: | ---: | ---: |")
	var base time.Duration
	for _, n := range sizes {
		if err := grow(n); err != nil {
			return err
		}
		benchutil.Progress("measuring with %d Services (%d runs each)", n, runs)
		idx, err := measure(indexed)
		if err != nil {
			return err
		}
		brute, err := measure(bruteForce)
		if err != nil {
			return err
		}
		if base == 0 {
			base = idx
		}
		fmt.Printf("| %d | %s | %.2fx | %s | %.0fx |\n", n, round(idx), float64(idx)/float64(base), round(brute), float64(brute)/float64(idx))
	}
	return nil
}

func round(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}
