package members

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/anchorage-dev/anchorage/internal/hub/api"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/federation"
)

// SequencesConfigMap holds every member's bundle-set sequence: one key per
// member, its value a SequenceEntry in JSON. One object, so that a change
// reaching a thousand members is one write, not a thousand.
const SequencesConfigMap = "anchorage-bundle-sequences"

// SequenceEntry is a member's current sequence and the digest of the
// content it names.
type SequenceEntry struct {
	Sequence int64  `json:"sequence"`
	Digest   string `json:"digest"`
	// Since is when this sequence was assigned.
	Since metav1.Time `json:"since"`
}

// BundleSets computes every member's federated bundle set from the
// informer cache and answers long polls. It runs on every replica; the
// leader alone assigns sequences, in the SequencesConfigMap. A replica
// serves a member's set only when its own computation has the digest the
// leader assigned the sequence to, so that a sequence names one content
// on every replica, whichever cache is ahead.
type BundleSets struct {
	Reader client.Reader
	// Client writes the sequences ConfigMap (leader only).
	Client    client.Client
	Namespace string
	Clock     clock.PassiveClock
	// Elected is closed when this replica leads (mgr.Elected()).
	Elected <-chan struct{}
	Metrics *BundleSetMetrics

	mu        sync.Mutex
	published map[string]*published
	waiters   map[string]chan struct{}
	anchors   anchorCache
	// draining: this replica is shutting down; long polls answer at once.
	draining bool
	// written is the sequences ConfigMap as this leader last wrote it:
	// newer than the cache until the watch catches up, and the base of the
	// next write (the cache's copy would conflict).
	written *corev1.ConfigMap
}

type published struct {
	entry SequenceEntry
	body  []byte
}

// SetupWithManager recomputes on every relevant change: a member's spec,
// join, anchors or ack; a TrustDomain's bundle; the sequences; and once
// when this replica becomes the leader.
func (s *BundleSets) SetupWithManager(mgr ctrl.Manager) error {
	s.published, s.waiters = map[string]*published{}, map[string]chan struct{}{}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{}}
	})
	elected := make(chan event.GenericEvent, 1)
	go func() {
		<-s.Elected
		elected <- event.GenericEvent{Object: &corev1.ConfigMap{}}
	}()
	return ctrl.NewControllerManagedBy(mgr).
		Named("hub-bundle-sets").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Watches(&hubv1.MemberCluster{}, all, builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*hubv1.MemberCluster), e.ObjectNew.(*hubv1.MemberCluster)
			return servedChanged(o, n) || o.Status.AppliedBundleDigest != n.Status.AppliedBundleDigest
		}})).
		Watches(&hubv1.TrustDomain{}, all).
		Watches(&corev1.ConfigMap{}, all, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == s.Namespace && o.GetName() == SequencesConfigMap
		}))).
		WatchesRawSource(source.Channel(elected, all)).
		Complete(s)
}

// Reconcile recomputes every set.
func (s *BundleSets) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	start := time.Now()
	var mcs hubv1.MemberClusterList
	// Read-only: no copy of a thousand objects on every change.
	if err := s.Reader.List(ctx, &mcs, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var tds hubv1.TrustDomainList
	if err := s.Reader.List(ctx, &tds, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var cm corev1.ConfigMap
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: SequencesConfigMap}, &cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	exists := err == nil
	if s.written != nil && s.leading() {
		cm, exists = *s.written.DeepCopy(), true
	}
	assigned := decodeSequences(log, cm.Data)

	applied := map[string]int64{}
	var members []federation.Member
	for i := range mcs.Items {
		mc := &mcs.Items[i]
		if !meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined) || !mc.DeletionTimestamp.IsZero() {
			continue
		}
		applied[mc.Name] = mc.Status.AppliedBundleSequence
		members = append(members, federation.Member{
			Name: mc.Name, TrustDomain: mc.Spec.TrustDomain, FederatesWith: mc.Spec.FederatesWith, ClusterSet: mc.Spec.InClusterSet(),
			Anchors: s.anchors.anchors(log, mc), AppliedDigest: mc.Status.AppliedBundleDigest,
		})
	}
	sets := federation.Sets(members, externals(log, tds.Items))
	digests := make(map[string]string, len(sets))
	for name, set := range sets {
		digests[name] = set.Digest()
	}

	if s.leading() {
		next, changed := nextSequences(assigned, s.floors(applied), digests, s.Clock.Now())
		if changed > 0 || len(next) != len(assigned) {
			if err := s.writeSequences(ctx, &cm, exists, next); err != nil {
				s.written = nil                // another leader wrote: start again from the cache
				return reconcile.Result{}, err // retried; replicas keep serving the previous sequences
			}
			assigned = next
			if s.Metrics != nil {
				s.Metrics.Changes.Add(float64(changed))
			}
		}
	}
	s.publish(log, sets, digests, assigned)
	s.anchors.endRound()
	if s.Metrics != nil {
		s.Metrics.ComputeSeconds.Observe(time.Since(start).Seconds())
	}
	return reconcile.Result{}, nil
}

func (s *BundleSets) leading() bool {
	select {
	case <-s.Elected:
		return true
	default:
		return false
	}
}

// externals are the TrustDomains as federation.Sets takes them. One whose
// bundle is not fetched yet, or does not parse, goes in without anchors:
// members keep what they hold of it (fail-static) rather than delete it.
// Of several TrustDomains of one trust domain, the first by name with
// anchors counts, so that every replica computes the same sets.
func externals(log logr.Logger, tds []hubv1.TrustDomain) []federation.External {
	index := map[string]int{}
	var out []federation.External
	for _, td := range byName(tds) {
		x := federation.External{TrustDomain: td.Spec.TrustDomain}
		if doc := td.CurrentBundle(); doc != "" {
			anchors, _, _, err := parseSPIFFEBundle(td.Spec.TrustDomain, doc)
			if err != nil {
				log.Error(err, "an unparsable fetched bundle: members keep what they hold of the trust domain", "trustDomain", td.Spec.TrustDomain)
			}
			x.Anchors = anchors
		}
		if i, seen := index[x.TrustDomain]; seen {
			if len(out[i].Anchors) == 0 {
				out[i] = x
			}
			continue
		}
		index[x.TrustDomain] = len(out)
		out = append(out, x)
	}
	return out
}

// floors are, per member, the sequence a new one must exceed: what the
// member acked and what this replica has published. After the ConfigMap is
// lost, a sequence the agent may have received (published, not acked yet)
// is never assigned to other content.
func (s *BundleSets) floors(applied map[string]int64) map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(applied))
	maps.Copy(out, applied)
	for name, p := range s.published {
		out[name] = max(out[name], p.entry.Sequence)
	}
	return out
}

// nextSequences bumps the sequence of every member whose digest changed
// and drops members that are gone. A new sequence is above the member's
// floor (see floors), so losing the ConfigMap can neither send a sequence
// backwards nor give one sequence two contents.
func nextSequences(assigned map[string]SequenceEntry, floor map[string]int64, digests map[string]string, now time.Time) (map[string]SequenceEntry, int) {
	next := make(map[string]SequenceEntry, len(digests))
	changed := 0
	for name, d := range digests {
		e, ok := assigned[name]
		if !ok || e.Digest != d {
			e = SequenceEntry{Sequence: max(e.Sequence, floor[name]) + 1, Digest: d, Since: metav1.NewTime(now.UTC().Truncate(time.Second))}
			changed++
		}
		next[name] = e
	}
	return next, changed
}

func (s *BundleSets) writeSequences(ctx context.Context, cm *corev1.ConfigMap, exists bool, entries map[string]SequenceEntry) error {
	data := make(map[string]string, len(entries))
	for name, e := range entries {
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		data[name] = string(raw)
	}
	if !exists {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: SequencesConfigMap,
			Labels: map[string]string{"app.kubernetes.io/part-of": "anchorage", "app.kubernetes.io/component": "hub"}}}
		cm.Data = data
		if err := s.Client.Create(ctx, cm, client.FieldOwner(api.FieldManager)); err != nil {
			return fmt.Errorf("creating the bundle-set sequences: %w", err)
		}
		s.written = cm
		return nil
	}
	// Update with the resourceVersion last seen: a conflict means another
	// leader wrote, and the next round starts from what it wrote.
	cm = cm.DeepCopy()
	cm.Data = data
	if err := s.Client.Update(ctx, cm, client.FieldOwner(api.FieldManager)); err != nil {
		return fmt.Errorf("writing the bundle-set sequences: %w", err)
	}
	s.written = cm
	return nil
}

func decodeSequences(log logr.Logger, data map[string]string) map[string]SequenceEntry {
	out := make(map[string]SequenceEntry, len(data))
	for name, raw := range data {
		var e SequenceEntry
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			log.Error(err, "ignoring an unreadable sequence entry; the member gets a new sequence", "member", name)
			continue
		}
		out[name] = e
	}
	return out
}

// publish makes the sets whose digest matches their assigned sequence
// visible to long polls, and wakes the waiters of those that changed.
func (s *BundleSets) publish(log logr.Logger, sets map[string]federation.BundleSet, digests map[string]string, assigned map[string]SequenceEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, set := range sets {
		e, ok := assigned[name]
		if !ok || e.Digest != digests[name] {
			continue // this replica's cache and the leader disagree for now: keep the old answer
		}
		if p := s.published[name]; p != nil && p.entry.Sequence == e.Sequence && p.entry.Digest == e.Digest {
			continue
		}
		set.Sequence = e.Sequence
		body, err := json.Marshal(set)
		if err != nil {
			log.Error(err, "encoding a bundle set", "member", name)
			continue
		}
		s.published[name] = &published{entry: e, body: body}
		s.wake(name)
	}
	for name := range s.published {
		if _, ok := sets[name]; !ok {
			delete(s.published, name)
			s.wake(name)
		}
	}
}

func (s *BundleSets) wake(name string) {
	if ch, ok := s.waiters[name]; ok {
		close(ch)
		delete(s.waiters, name)
	}
}

// Current returns member's published sequence entry.
func (s *BundleSets) Current(member string) (SequenceEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.published[member]; p != nil {
		return p.entry, true
	}
	return SequenceEntry{}, false
}

// Drain answers every waiting long poll, and every later one, at once:
// called when this replica's server shuts down, so that agents poll
// another replica rather than count a failure when the connection is cut.
func (s *BundleSets) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for name := range s.waiters {
		s.wake(name)
	}
}

// Next returns member's bundle set (JSON) as soon as its sequence differs
// from after, or nil when timeout passes, ctx ends or the replica drains
// first. A sequence below after means the hub's state was reset: the agent
// gets the current set rather than waiting forever.
func (s *BundleSets) Next(ctx context.Context, member string, after int64, timeout time.Duration) []byte {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		p := s.published[member]
		if p != nil && p.entry.Sequence != after {
			s.mu.Unlock()
			return p.body
		}
		if s.draining {
			s.mu.Unlock()
			return nil
		}
		if s.Metrics != nil {
			s.Metrics.Waiting.Inc()
		}
		ch, ok := s.waiters[member]
		if !ok {
			ch = make(chan struct{})
			s.waiters[member] = ch
		}
		s.mu.Unlock()
		var done bool
		select {
		case <-ch:
		case <-timer.C:
			done = true
		case <-ctx.Done():
			done = true
		}
		if s.Metrics != nil {
			s.Metrics.Waiting.Dec()
		}
		if done {
			return nil
		}
	}
}

// BundleSetMetrics are the hub's push metrics.
type BundleSetMetrics struct {
	ComputeSeconds prometheus.Histogram
	Changes        prometheus.Counter
	Waiting        prometheus.Gauge
}

// NewBundleSetMetrics registers the push metrics on reg.
func NewBundleSetMetrics(reg prometheus.Registerer) *BundleSetMetrics {
	m := &BundleSetMetrics{
		ComputeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anchorage_hub_bundle_set_compute_seconds", Help: "Time to recompute every member's bundle set after a change.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		Changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "anchorage_hub_bundle_set_changes_total", Help: "Member bundle sets whose content changed and got a new sequence (leader only)."}),
		Waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "anchorage_hub_long_polls", Help: "Agent long polls waiting for a new bundle set on this replica."}),
	}
	reg.MustRegister(m.ComputeSeconds, m.Changes, m.Waiting)
	return m
}
