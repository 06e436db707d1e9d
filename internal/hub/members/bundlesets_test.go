package members

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

func TestNextSequences(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	assigned := map[string]SequenceEntry{"east": {Sequence: 4, Digest: "a"}, "west": {Sequence: 2, Digest: "b"}, "gone": {Sequence: 9, Digest: "c"}}

	next, changed := nextSequences(assigned, nil, map[string]string{"east": "a", "west": "b2", "new": "d"}, t0)
	if changed != 2 {
		t.Errorf("changed %d, want 2 (west's content, new's first set)", changed)
	}
	want := map[string]int64{"east": 4, "west": 3, "new": 1}
	got := map[string]int64{}
	for k, e := range next {
		got[k] = e.Sequence
	}
	if !maps.Equal(got, want) {
		t.Errorf("sequences %v, want %v (unchanged content keeps its sequence; a gone member is dropped)", got, want)
	}
	if !next["west"].Since.Time.Equal(t0) || !next["east"].Since.Time.IsZero() {
		t.Error("since must move with the sequence only")
	}

	// The ConfigMap was lost: sequences restart above what members acked,
	// never below.
	next, _ = nextSequences(nil, map[string]int64{"east": 17}, map[string]string{"east": "a"}, t0)
	if next["east"].Sequence != 18 {
		t.Errorf("after a lost ConfigMap east gets %d, want 18", next["east"].Sequence)
	}
}

func TestNextWakesOnPublish(t *testing.T) {
	s := &BundleSets{published: map[string]*published{}, waiters: map[string]chan struct{}{}}
	ctx := context.Background()
	if body := s.Next(ctx, "east", 0, 50*time.Millisecond); body != nil {
		t.Fatalf("nothing published yet, got %s", body)
	}

	sets := map[string]federation.BundleSet{"east": {Bundles: []federation.Bundle{}}}
	digests := map[string]string{"east": sets["east"].Digest()}
	got := make(chan []byte, 1)
	go func() { got <- s.Next(ctx, "east", 0, 10*time.Second) }()
	time.Sleep(20 * time.Millisecond)
	// A sequence for another digest (the leader is ahead of this cache):
	// nothing is served.
	s.publish(logr.Discard(), sets, digests, map[string]SequenceEntry{"east": {Sequence: 1, Digest: "other"}})
	select {
	case b := <-got:
		t.Fatalf("served a set whose content the leader did not assign: %s", b)
	case <-time.After(50 * time.Millisecond):
	}
	s.publish(logr.Discard(), sets, digests, map[string]SequenceEntry{"east": {Sequence: 1, Digest: digests["east"]}})
	select {
	case b := <-got:
		if string(b) != `{"sequence":1,"bundles":[],"clusterSet":false,"anchors":null}` {
			t.Errorf("body %s", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter was not woken")
	}
	if s.Next(ctx, "east", 1, 30*time.Millisecond) != nil {
		t.Error("after=1 with sequence 1 must wait")
	}
	if s.Next(ctx, "east", 7, time.Second) == nil {
		t.Error("after above the hub's sequence (the hub's state was reset) must answer at once")
	}
}

// hubScheme knows the hub's types and ConfigMaps.
func hubScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := hubv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func newCA(t *testing.T, cluster, td string) *signers.CA {
	t.Helper()
	ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile(cluster, td, "https://hub.example/clusters/"+cluster), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// fetched is a TrustDomain whose poller stored a bundle of cas.
func fetched(t *testing.T, name, td string, cas ...*signers.CA) *hubv1.TrustDomain {
	t.Helper()
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString(td))
	for _, ca := range cas {
		b.AddX509Authority(ca.Certificate)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &hubv1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: hubv1.TrustDomainSpec{TrustDomain: td},
		Status: hubv1.TrustDomainStatus{Bundle: string(doc), BundleTrustDomain: td}}
}

func joinedMember(name, td string, federatesWith ...string) *hubv1.MemberCluster {
	return &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: hubv1.MemberClusterSpec{Issuer: "https://hub.example/clusters/" + name, TrustDomain: td, FederatesWith: federatesWith},
		Status: hubv1.MemberClusterStatus{Conditions: []metav1.Condition{{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined,
			LastTransitionTime: metav1.Now()}}}}
}

// newBundleSets is a replica on c; elected: whether it leads.
func newBundleSets(c client.Client, elected bool) *BundleSets {
	ch := make(chan struct{})
	if elected {
		close(ch)
	}
	return &BundleSets{Reader: c, Client: c, Namespace: "anchorage-hub", Clock: clocktesting.NewFakePassiveClock(time.Now()), Elected: ch,
		published: map[string]*published{}, waiters: map[string]chan struct{}{}}
}

func recompute(t *testing.T, s *BundleSets) {
	t.Helper()
	if _, err := s.Reconcile(context.Background(), reconcile.Request{}); err != nil {
		t.Fatal(err)
	}
}

// served is member's bundle set as a long poll after `after` gets it.
func served(t *testing.T, s *BundleSets, member string, after int64) federation.BundleSet {
	t.Helper()
	body := s.Next(context.Background(), member, after, time.Second)
	if body == nil {
		t.Fatalf("no bundle set for %s after %d", member, after)
	}
	var set federation.BundleSet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func bundleNames(set federation.BundleSet) []string {
	var names []string
	for _, b := range set.Bundles {
		names = append(names, b.Name)
	}
	return names
}

// A TrustDomain the hub holds no good bundle of (not fetched yet, does not
// parse, fetched for another trust domain) is in Keep, never in Bundles:
// agents neither delete nor rewrite what they hold of it.
func TestTrustDomainsWithoutAGoodBundleAreKept(t *testing.T) {
	good := fetched(t, "good", "good.example", newCA(t, "g", "good.example"))
	unfetched := &hubv1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: "unfetched"}, Spec: hubv1.TrustDomainSpec{TrustDomain: "unfetched.example"}}
	garbled := fetched(t, "garbled", "garbled.example", newCA(t, "x", "garbled.example"))
	garbled.Status.Bundle = "not a bundle"
	// Stored for old.example before the rename (or before bundleTrustDomain
	// existed): old.example's CAs must not be pushed as renamed.example's.
	renamed := fetched(t, "renamed", "old.example", newCA(t, "o", "old.example"))
	renamed.Spec.TrustDomain = "renamed.example"
	// A second TrustDomain of good.example without a bundle loses to the
	// one with anchors, whatever the list order.
	duplicate := &hubv1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: "a-good-duplicate"}, Spec: hubv1.TrustDomainSpec{TrustDomain: "good.example"}}
	east := joinedMember("east", "east.example", "good.example", "unfetched.example", "garbled.example", "renamed.example")
	c := fake.NewClientBuilder().WithScheme(hubScheme(t)).WithObjects(east, good, unfetched, garbled, renamed, duplicate).Build()
	s := newBundleSets(c, true)
	recompute(t, s)

	set := served(t, s, "east", 0)
	wantKeep := []string{federation.TrustDomainBundleName("garbled.example"), federation.TrustDomainBundleName("renamed.example"), federation.TrustDomainBundleName("unfetched.example")}
	if !slices.Equal(set.Keep, wantKeep) {
		t.Errorf("keep = %v, want %v", set.Keep, wantKeep)
	}
	if names := bundleNames(set); !slices.Equal(names, []string{federation.TrustDomainBundleName("good.example")}) {
		t.Errorf("bundles = %v, want good.example's alone", names)
	}
}

// After the sequences ConfigMap is lost, a new content never gets a
// sequence the member may already hold with another content, and every
// replica serves the leader's content for a sequence.
func TestLostSequencesNeverReuseASequence(t *testing.T) {
	ctx := context.Background()
	ca1, ca2, ca3 := newCA(t, "s1", "spire.example"), newCA(t, "s2", "spire.example"), newCA(t, "s3", "spire.example")
	spire := fetched(t, "spire", "spire.example", ca1)
	east := joinedMember("east", "east.example", "spire.example")
	c := fake.NewClientBuilder().WithScheme(hubScheme(t)).WithStatusSubresource(&hubv1.MemberCluster{}, &hubv1.TrustDomain{}).WithObjects(east, spire).Build()
	leader, follower := newBundleSets(c, true), newBundleSets(c, false)
	both := func() {
		recompute(t, leader)
		recompute(t, follower)
	}
	setBundle := func(cas ...*signers.CA) {
		t.Helper()
		var td hubv1.TrustDomain
		if err := c.Get(ctx, client.ObjectKey{Name: "spire"}, &td); err != nil {
			t.Fatal(err)
		}
		td.Status = fetched(t, "spire", "spire.example", cas...).Status
		if err := c.Status().Update(ctx, &td); err != nil {
			t.Fatal(err)
		}
	}

	both()
	first := served(t, leader, "east", 0)
	// The agent acks sequence 1.
	var mc hubv1.MemberCluster
	if err := c.Get(ctx, client.ObjectKey{Name: "east"}, &mc); err != nil {
		t.Fatal(err)
	}
	mc.Status.AppliedBundleSequence, mc.Status.AppliedBundleDigest = first.Sequence, federation.BundlesDigest(first.Bundles)
	if err := c.Status().Update(ctx, &mc); err != nil {
		t.Fatal(err)
	}
	setBundle(ca1, ca2) // content X, sequence 2, published, not acked
	both()
	x := served(t, follower, "east", first.Sequence)
	if x.Sequence != 2 || served(t, leader, "east", first.Sequence).Sequence != 2 {
		t.Fatalf("X got sequence %d, want 2", x.Sequence)
	}

	if err := c.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "anchorage-hub", Name: SequencesConfigMap}}); err != nil {
		t.Fatal(err)
	}
	setBundle(ca1, ca3) // content Y
	// The leader's write over its own copy fails (the object is gone); the
	// workqueue retries from the cache, which has no sequences.
	_, _ = leader.Reconcile(ctx, reconcile.Request{})
	both()
	for name, s := range map[string]*BundleSets{"leader": leader, "follower": follower} {
		y := served(t, s, "east", x.Sequence)
		if y.Sequence <= x.Sequence {
			t.Errorf("%s: the new content got sequence %d, want above the published %d", name, y.Sequence, x.Sequence)
		}
		if !strings.Contains(y.Bundles[0].TrustBundle, string(pemOf(ca3))) {
			t.Errorf("%s: sequence %d does not carry the new content", name, y.Sequence)
		}
	}
}

// A replica serves the content the leader assigned a sequence to, even when
// it already published that sequence with another content (a leader that
// lost the sequences and never saw the earlier assignment).
func TestPublishFollowsTheDigest(t *testing.T) {
	s := newBundleSets(nil, false)
	x := map[string]federation.BundleSet{"east": {Bundles: []federation.Bundle{{Name: "x"}}}}
	y := map[string]federation.BundleSet{"east": {Bundles: []federation.Bundle{{Name: "y"}}}}
	dx, dy := map[string]string{"east": x["east"].Digest()}, map[string]string{"east": y["east"].Digest()}
	s.publish(logr.Discard(), x, dx, map[string]SequenceEntry{"east": {Sequence: 2, Digest: dx["east"]}})
	s.publish(logr.Discard(), y, dy, map[string]SequenceEntry{"east": {Sequence: 2, Digest: dy["east"]}})
	if got := served(t, s, "east", 0); got.Sequence != 2 || got.Bundles[0].Name != "y" {
		t.Errorf("serves %+v, want sequence 2 with the leader's content y", got)
	}
}

func pemOf(ca *signers.CA) []byte {
	return bytes.TrimSpace(signers.EncodeCertificatesPEM([]*x509.Certificate{ca.Certificate}))
}
