package kubeletsim_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"

	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

// BenchmarkRunPods1000 runs 1,000 pods with one ECDSA P-256 podCertificate
// source each on one simulated node, against one real apiserver and the test
// signer, and measures the time until every pod's files are written. Run with
// -benchtime=1x; each iteration uses a fresh namespace.
//
//	go test ./internal/kubeletsim/ -run '^$' -bench RunPods1000 -benchtime=1x
func BenchmarkRunPods1000(b *testing.B) {
	const pods = 1000
	c := localcluster.StartT(b, localcluster.Options{Name: "bench"})
	startSigner(b, c.Clientset, testSignerName)
	sim, err := kubeletsim.New(c.Config, kubeletsim.Options{NodeName: "bench-node", Dir: b.TempDir(), Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sim.Stop)

	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		ns := fmt.Sprintf("bench-%d", i)
		began := time.Now()
		// Pods arrive at once, as after a rollout or a node restart.
		running := make([]*kubeletsim.Pod, pods)
		var g errgroup.Group
		g.SetLimit(32)
		for j := range pods {
			g.Go(func() error {
				p, err := sim.RunPod(ctx, kubeletsim.NewPod(ns, fmt.Sprintf("p%04d", j), "", kubeletsim.PodCertificateSource(testSignerName, "ECDSAP256")))
				running[j] = p
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		created := time.Since(began)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		for _, p := range running {
			if err := p.WaitIssued(wctx); err != nil {
				cancel()
				b.Fatal(err)
			}
		}
		cancel()
		total := time.Since(began)
		b.ReportMetric(float64(pods)/total.Seconds(), "pods/s")
		b.ReportMetric(created.Seconds(), "s-to-create-pods")
		b.ReportMetric(total.Seconds(), "s-to-all-issued")
	}
}
