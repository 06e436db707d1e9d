// Command propagation measures how fast an anchor change in one member
// reaches every other member: the time from an operator's CA pool change
// in west (`member-agent ca rotate`, then `ca abort`, alternately: each
// adds or drops an anchor) to the moment the federated ClusterTrustBundle
// for west.bench holds the new anchors in every other member cluster.
//
// Everything is the sandbox's real code on real apiservers: a hub cluster
// with one hub, and -members member clusters (west plus the others, each
// federating with west.bench), their agents in-process. The path measured:
// the agent sees its pool Secret change, rewrites the pool, reports to the
// hub; the hub records the anchors, recomputes and assigns sequences,
// wakes the long polls; every other agent applies its bundle. Each
// member's bundle is watched, so the time is when the apiserver has it.
//
//	go run ./propagation [-changes 50] [-members 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/go-logr/logr"
	certsv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/hack/bench/internal/benchutil"
	"github.com/anchorage-dev/anchorage/internal/agent/capool"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/sandbox"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

func main() {
	changes := flag.Int("changes", 50, "anchor changes to measure")
	n := flag.Int("members", 3, "member clusters: west, whose anchors change, and the others that trust it")
	flag.Parse()
	benchutil.QuietLogs(logr.Discard())
	ctx, stop := benchutil.Interruptible(context.Background())
	err := run(ctx, *changes, *n)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "propagation:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, changes, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if n < 2 {
		return fmt.Errorf("-members must be at least 2")
	}
	if _, err := localcluster.EnsureAssets(ctx, os.Stderr); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "anchorage-propagation-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	benchutil.Progress("starting the hub and %d member clusters", n)
	hub, err := sandbox.StartHub(ctx, sandbox.HubOptions{Dir: dir, Log: logr.Discard()})
	if err != nil {
		return err
	}
	defer hub.Stop()
	const westTD = "west.bench"
	// The promotion delay keeps a rotation from completing between the
	// rotate and the abort: each change is exactly one anchor more or less.
	slow := func(o *agentapp.Options) { o.CAPromotionDelay = time.Hour }
	var peers []*sandbox.Member
	var west *sandbox.Member
	for i := range n {
		name, td := fmt.Sprintf("peer-%d", i), fmt.Sprintf("peer-%d.bench", i)
		if i == 0 {
			name, td = "west", westTD
		}
		m, err := hub.AddMember(ctx, sandbox.MemberOptions{Name: name, TrustDomain: td, Log: logr.Discard(), Agent: []func(*agentapp.Options){slow},
			Spec: func(s *hubv1.MemberClusterSpec) { s.FederatesWith = []string{westTD}; s.ClusterSet = new(bool) }})
		if err != nil {
			return err
		}
		defer m.Stop()
		if i == 0 {
			west = m
		} else {
			peers = append(peers, m)
		}
	}
	for _, m := range append([]*sandbox.Member{west}, peers...) {
		if err := hub.WaitReady(ctx, m.Name, 2*time.Minute); err != nil {
			return err
		}
	}

	// One watch per peer on the bundle of west.bench; updates land in
	// seen[peer] with their arrival time.
	type arrival struct {
		peer    int
		at      time.Time
		anchors int
	}
	arrivals := make(chan arrival, 1024)
	name := federation.TrustDomainBundleName(westTD)
	for i, p := range peers {
		cs, err := kubernetes.NewForConfig(p.Cluster.Config)
		if err != nil {
			return err
		}
		w, err := cs.CertificatesV1().ClusterTrustBundles().Watch(ctx, metav1ListOptions(name))
		if err != nil {
			return err
		}
		defer w.Stop()
		go func() {
			for ev := range w.ResultChan() {
				ctb, ok := ev.Object.(*certsv1.ClusterTrustBundle)
				if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
					continue
				}
				certs, err := signers.ParseCertificatesPEM([]byte(ctb.Spec.TrustBundle))
				if err != nil {
					continue
				}
				arrivals <- arrival{peer: i, at: time.Now(), anchors: len(certs)}
			}
		}()
	}
	benchutil.Progress("waiting for every peer to trust west")
	have := make([]int, len(peers))
	waitAll := func(want int, timeout time.Duration) (time.Time, error) {
		var last time.Time
		deadline := time.After(timeout)
		for {
			done := 0
			for _, h := range have {
				if h == want {
					done++
				}
			}
			if done == len(peers) {
				return last, nil
			}
			select {
			case a := <-arrivals:
				have[a.peer] = a.anchors
				if a.anchors == want {
					last = a.at
				}
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			case <-deadline:
				return time.Time{}, fmt.Errorf("peers hold %v anchors of west after %s, want %d each", have, timeout, want)
			}
		}
	}
	if _, err := waitAll(1, time.Minute); err != nil {
		return err
	}

	var took []time.Duration
	for c := range changes {
		action, want := capool.RequestRotate, 2
		if c%2 == 1 {
			action, want = capool.RequestAbort, 1
		}
		start := time.Now()
		if err := capool.Request(ctx, west.Cluster.Client, "anchorage-system", signers.SPIFFESignerName, action); err != nil {
			return err
		}
		at, err := waitAll(want, 30*time.Second)
		if err != nil {
			return fmt.Errorf("change %d (%s): %w", c+1, action, err)
		}
		took = append(took, at.Sub(start))
		if (c+1)%10 == 0 {
			benchutil.Progress("%d/%d changes, last %v", c+1, changes, at.Sub(start).Round(time.Millisecond))
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	p99 := took[min(len(took)-1, (len(took)*99+99)/100-1)]
	fmt.Printf("propagation over %d anchor changes, %d peers each: p50 %v  p99 %v  max %v  (min %v)\n",
		len(took), len(peers), benchutil.Median(took).Round(time.Millisecond), p99.Round(time.Millisecond),
		slices.Max(took).Round(time.Millisecond), took[0].Round(time.Millisecond))
	return nil
}

func metav1ListOptions(name string) metav1.ListOptions {
	return metav1.ListOptions{FieldSelector: "metadata.name=" + name}
}
