package hubclient_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	certsv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/internal/agent/hubclient"
	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload/workloadtest"
)

// fakeHub answers the agent API's bundles and ack calls from a set the
// test changes; it can be down (503) or stall acks until the caller gives
// up.
type fakeHub struct {
	mu    sync.Mutex
	set   federation.BundleSet
	acks  []federation.Ack
	polls atomic.Int64
	down  atomic.Bool
	stall atomic.Bool
	// stalled counts acks that were never answered.
	stalled atomic.Int64
}

func (h *fakeHub) publish(set federation.BundleSet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set.Sequence = h.set.Sequence + 1
	h.set = set
}

func (h *fakeHub) acked() []federation.Ack {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.acks)
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.down.Load() {
		http.Error(w, `{"error":"down"}`, http.StatusServiceUnavailable)
		return
	}
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+federation.BundlesPath):
		h.polls.Add(1)
		after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		h.mu.Lock()
		set := h.set
		h.mu.Unlock()
		if set.Sequence <= after {
			time.Sleep(50 * time.Millisecond) // a very short long poll
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_ = json.NewEncoder(w).Encode(set)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/"+federation.AckPath):
		if h.stall.Load() {
			h.stalled.Add(1)
			_, _ = io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
			<-r.Context().Done()               // never answers: the agent must give up
			return
		}
		var a federation.Ack
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
			http.Error(w, `{"error":"bad ack"}`, http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.acks = append(h.acks, a)
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// writeCounter counts the writes a follower makes through it.
type writeCounter struct {
	client.Client
	writes atomic.Int64
}

func (c *writeCounter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.writes.Add(1)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *writeCounter) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.writes.Add(1)
	return c.Client.Update(ctx, obj, opts...)
}

func (c *writeCounter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	c.writes.Add(1)
	return c.Client.Patch(ctx, obj, patch, opts...)
}

func (c *writeCounter) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	c.writes.Add(1)
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *writeCounter) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.writes.Add(1)
	return c.Client.Delete(ctx, obj, opts...)
}

// followerEnv is one real apiserver (ClusterTrustBundles are validated
// there), a fake hub, and a follower started per subtest.
type followerEnv struct {
	cl *localcluster.Cluster
}

type runningFollower struct {
	*hubclient.Follower
	hub    *fakeHub
	writes *writeCounter
	cache  cache.Cache
}

// cacheCaughtUp waits until the follower's cache holds every bundle at its
// live resourceVersion: from then on a repair sees what the apiserver has.
func (f *runningFollower) cacheCaughtUp(t *testing.T, e *followerEnv) {
	t.Helper()
	waitFor(t, "the follower's cache caught up", func() bool {
		var list certsv1.ClusterTrustBundleList
		if err := f.cache.List(context.Background(), &list); err != nil {
			t.Fatal(err)
		}
		cached := map[string]string{}
		for _, b := range list.Items {
			cached[b.Name] = b.ResourceVersion
		}
		return maps.Equal(cached, e.versions(t))
	})
}

// moreRepairs waits until n more repair passes have run.
func (f *runningFollower) moreRepairs(t *testing.T, n int64) {
	t.Helper()
	from := f.Repairs()
	waitFor(t, "more repair passes", func() bool { return f.Repairs() >= from+n })
}

// start runs a follower of a new fake hub until the subtest ends, then
// deletes every ClusterTrustBundle so the next subtest starts clean.
func (e *followerEnv) start(t *testing.T) *runningFollower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hub := &fakeHub{}
	srv := httptest.NewServer(hub)
	t.Cleanup(srv.Close) // after the follower stopped (cleanups run last-in first-out)
	t.Cleanup(func() {
		if err := e.cl.Client.DeleteAllOf(context.Background(), &certsv1.ClusterTrustBundle{}); err != nil {
			t.Error(err)
		}
	})

	informers, err := cache.New(e.cl.Config, cache.Options{Scheme: e.cl.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = informers.Start(ctx) }()
	if _, err := informers.GetInformer(ctx, &certsv1.ClusterTrustBundle{}); err != nil {
		t.Fatal(err)
	}
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	c, err := client.New(e.cl.Config, client.Options{Scheme: e.cl.Scheme, Cache: &client.CacheOptions{Reader: informers}})
	if err != nil {
		t.Fatal(err)
	}
	writes := &writeCounter{Client: c}
	f := &hubclient.Follower{
		Hub:         &federation.Client{HubURL: srv.URL, Cluster: "east", Token: func(context.Context) (string, error) { return "token", nil }},
		Client:      writes,
		Informers:   informers,
		PollTimeout: 10 * time.Second,
		AckTimeout:  300 * time.Millisecond,
		Resync:      200 * time.Millisecond,
		MaxBackoff:  200 * time.Millisecond,
		Log:         testr.New(t),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Start(ctx); err != nil {
			t.Errorf("follower: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &runningFollower{Follower: f, hub: hub, writes: writes, cache: informers}
}

// bundle reads a ClusterTrustBundle live; nil when there is none.
func (e *followerEnv) bundle(t *testing.T, name string) *certsv1.ClusterTrustBundle {
	t.Helper()
	var ctb certsv1.ClusterTrustBundle
	err := e.cl.Client.Get(context.Background(), client.ObjectKey{Name: name}, &ctb)
	if client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	if err != nil {
		return nil
	}
	return &ctb
}

// holds reports whether the cluster holds b exactly as the hub sent it.
func (e *followerEnv) holds(t *testing.T, b federation.Bundle) bool {
	t.Helper()
	have := e.bundle(t, b.Name)
	return have != nil && have.Spec.TrustBundle == b.TrustBundle && have.Spec.SignerName == b.SignerName && maps.Equal(have.Labels, b.Labels)
}

func (e *followerEnv) versions(t *testing.T) map[string]string {
	t.Helper()
	var list certsv1.ClusterTrustBundleList
	if err := e.cl.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range list.Items {
		out[b.Name] = b.ResourceVersion
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// peerBundle is the federated bundle of td as the hub sends it to east.
func peerBundle(t *testing.T, td string) federation.Bundle {
	ca := workloadtest.NewSPIFFECA(t, spiffeid.RequireTrustDomainFromString(td), td)
	return federation.Bundle{
		Name: federation.TrustDomainBundleName(td), SignerName: signers.SPIFFESignerName, TrustBundle: string(ca.AnchorPEM()),
		Labels: map[string]string{
			federation.LabelCanarying: federation.CanaryingLive, federation.LabelWorkloadTrustDomain: "east.example",
			federation.LabelPeerTrustDomain: td, federation.LabelSource: federation.SourceHub,
		},
	}
}

// The follower's apply side against a real apiserver: Keep, repair,
// stalled acks and a bundle the apiserver rejects.
func TestFollowerAppliesAndRepairs(t *testing.T) {
	e := &followerEnv{cl: localcluster.StartT(t, localcluster.Options{Name: "east"})}
	west, north := peerBundle(t, "west.example"), peerBundle(t, "north.example")

	// A kept bundle is neither deleted nor written (repairs included);
	// once the hub drops it from Keep it goes.
	t.Run("keep", func(t *testing.T) {
		f := e.start(t)
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{north, west}})
		waitFor(t, "both bundles applied and acked", func() bool {
			return e.holds(t, west) && e.holds(t, north) && len(f.hub.acked()) == 1
		})
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{west}, Keep: []string{north.Name}})
		waitFor(t, "the set keeping north acked", func() bool { return len(f.hub.acked()) == 2 })
		if !e.holds(t, north) {
			t.Fatal("a kept bundle was deleted or changed")
		}
		// Someone edits the kept bundle: it is not the agent's to restore.
		edited := e.bundle(t, north.Name)
		edited.Spec.TrustBundle = west.TrustBundle
		if err := e.cl.Client.Update(context.Background(), edited); err != nil {
			t.Fatal(err)
		}
		f.cacheCaughtUp(t, e)
		f.moreRepairs(t, 3) // the edit's event, then resyncs
		if now := e.bundle(t, north.Name); now == nil || now.ResourceVersion != edited.ResourceVersion {
			t.Fatal("a kept bundle was written by a repair")
		}
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{west}})
		waitFor(t, "north deleted once no longer kept", func() bool { return e.bundle(t, north.Name) == nil && len(f.hub.acked()) == 3 })
		if !e.holds(t, west) {
			t.Error("west changed")
		}
	})

	// With the hub gone, a deleted or edited federated bundle is restored
	// from the last good answer; an unchanged state writes nothing.
	t.Run("repair", func(t *testing.T) {
		f := e.start(t)
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{north, west}})
		waitFor(t, "applied and acked", func() bool { return e.holds(t, west) && e.holds(t, north) && len(f.hub.acked()) == 1 })
		f.hub.down.Store(true)
		f.cacheCaughtUp(t, e)
		before, writes := e.versions(t), f.writes.writes.Load()
		f.moreRepairs(t, 3)
		if after := e.versions(t); !maps.Equal(before, after) || f.writes.writes.Load() != writes {
			t.Fatalf("resyncs of an unchanged state wrote %d times: %v -> %v", f.writes.writes.Load()-writes, before, after)
		}

		if err := e.cl.Client.Delete(context.Background(), e.bundle(t, west.Name)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "deleted bundle restored", func() bool { return e.holds(t, west) })

		edited := e.bundle(t, west.Name)
		edited.Spec.TrustBundle = north.TrustBundle
		edited.Labels[federation.LabelPeerTrustDomain] = "evil.example"
		if err := e.cl.Client.Update(context.Background(), edited); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "edited bundle restored", func() bool { return e.holds(t, west) })

		unlabelled := e.bundle(t, north.Name)
		delete(unlabelled.Labels, federation.LabelSource)
		if err := e.cl.Client.Update(context.Background(), unlabelled); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the hub's label restored", func() bool { return e.holds(t, north) })
		if n := len(f.hub.acked()); n != 1 {
			t.Errorf("%d acks, want the first only (the hub is down)", n)
		}
	})

	// A hub that never answers the ack: the follower gives up, retries,
	// and keeps every bundle; it acks once the hub answers.
	t.Run("stalled ack", func(t *testing.T) {
		f := e.start(t)
		f.hub.stall.Store(true)
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{west}})
		waitFor(t, "two stalled acks", func() bool { return f.hub.stalled.Load() >= 2 })
		if !e.holds(t, west) || f.Last() != nil {
			t.Fatalf("during stalled acks: bundle held %v, last %v", e.holds(t, west), f.Last())
		}
		f.hub.stall.Store(false)
		waitFor(t, "acked once the hub answers", func() bool { return f.Last() != nil && len(f.hub.acked()) == 1 })
	})

	// A bundle too big for the apiserver is kept as the cluster holds it,
	// the rest of the set is applied, and the set is not acked.
	t.Run("bundle over the limit", func(t *testing.T) {
		f := e.start(t)
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{north}})
		waitFor(t, "north applied and acked", func() bool { return e.holds(t, north) && len(f.hub.acked()) == 1 })
		huge := north
		var pem strings.Builder
		for pem.Len() <= trustbundles.MaxBundleBytes {
			pem.WriteString(peerBundle(t, "north.example").TrustBundle)
		}
		huge.TrustBundle = pem.String()
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{huge, west}})
		waitFor(t, "west applied", func() bool { return e.holds(t, west) })
		polls := f.hub.polls.Load()
		waitFor(t, "three more tries", func() bool { return f.hub.polls.Load() >= polls+3 })
		if !e.holds(t, north) || len(f.hub.acked()) != 1 {
			t.Errorf("north as before: %v; acks %v (want the first only)", e.holds(t, north), f.hub.acked())
		}
	})

	// A bundle the apiserver rejects does not hold back the others, and the
	// set is not acked.
	t.Run("one rejected bundle", func(t *testing.T) {
		f := e.start(t)
		bad := peerBundle(t, "a-bad.example")
		bad.Labels[federation.LabelWorkloadTrustDomain] = "not a label value!"
		f.hub.publish(federation.BundleSet{Bundles: []federation.Bundle{bad, west}})
		waitFor(t, "the good bundle applied", func() bool { return e.holds(t, west) })
		polls := f.hub.polls.Load()
		waitFor(t, "three more tries", func() bool { return f.hub.polls.Load() >= polls+3 })
		if e.bundle(t, bad.Name) != nil || len(f.hub.acked()) != 0 || f.Last() != nil {
			t.Errorf("rejected bundle present %v, acks %v", e.bundle(t, bad.Name) != nil, f.hub.acked())
		}
	})
}
