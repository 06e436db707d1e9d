package members

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anchorage-dev/anchorage/pkg/federation"
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
