package capool

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// RequestAnnotation on a pool Secret asks the agent for a rotation step;
// the agent carries it out and removes the annotation in the same write.
// `member-agent ca` sets it.
const RequestAnnotation = "ca.anchorage.dev/request"

// Rotation requests.
const (
	// RequestRotate adds a next CA, published at once and promoted when the
	// gate opens.
	RequestRotate = "rotate"
	// RequestPromote promotes the next CA now, without waiting for the gate.
	RequestPromote = "promote"
	// RequestAbort drops the next CA.
	RequestAbort = "abort"
)

// gateRecheck is how often a next CA waiting on the gate is looked at
// again, besides every bundle set applied.
const gateRecheck = 30 * time.Second

// Request asks the agent for a rotation step on signer's pool (one of the
// Request* values), as `member-agent ca` does.
func Request(ctx context.Context, c client.Client, namespace, signer, request string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, RequestAnnotation, request)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: SecretName(signer)}}
	if err := c.Patch(ctx, secret, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		return fmt.Errorf("asking the agent to %s the %s pool (Secret %s/%s): %w", request, signer, namespace, secret.Name, err)
	}
	return nil
}

// Gate says whether a next CA may be promoted: whether every member that
// trusts this cluster has applied a bundle set holding its anchor.
type Gate interface {
	Distributed(signer string, anchorSKID string) bool
}

// Rotation drives the CA pools' rotation: operator requests, the
// promotion of a next CA once PromotionDelay has passed both since it was
// published and since the gate opened, and pruning retired CAs whose
// leaves have all expired. It runs on the leader, which alone writes pools.
type Rotation struct {
	Store *Store
	// Gate is nil when no hub is configured: nobody else must trust the
	// next CA, so only PromotionDelay counts.
	Gate Gate
	// PromotionDelay is the least time a next CA is published, and (with
	// a hub) applied by every member trusting this cluster, before it
	// signs: for kubelets to refresh the projected trust bundles of pods.
	PromotionDelay time.Duration
	Clock          clock.PassiveClock
	Recorder       events.EventRecorder
	Metrics        *RotationMetrics
}

// SetupWithManager reconciles a signer's pool when its Secret changes and
// when gateChanges fires (a bundle set applied from the hub).
func (r *Rotation) SetupWithManager(mgr ctrl.Manager, gateChanges <-chan event.GenericEvent) error {
	every := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		var out []reconcile.Request
		for _, sc := range r.Store.Signers {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.Store.Namespace, Name: SecretName(sc.Profile.Signer)}})
		}
		return out
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("ca-rotation").
		For(&corev1.Secret{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Store.Namespace && r.Store.ours(o.GetName())
		}))).
		WatchesRawSource(source.Channel(r.Store.Subscribe(), every))
	if gateChanges != nil {
		b = b.WatchesRawSource(source.Channel(gateChanges, every))
	}
	return b.Complete(r)
}

// Reconcile carries out one step for one signer's pool.
func (r *Rotation) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var sc *SignerConfig
	for i := range r.Store.Signers {
		if SecretName(r.Store.Signers[i].Profile.Signer) == req.Name {
			sc = &r.Store.Signers[i]
		}
	}
	if sc == nil {
		return reconcile.Result{}, nil
	}
	signer := sc.Profile.Signer
	var secret corev1.Secret
	if err := r.Store.Client.Get(ctx, req.NamespacedName, &secret); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err) // the Store restores a deleted pool
	}
	pool, err := r.Store.parse(&secret)
	if err != nil {
		return reconcile.Result{}, nil // the Store says why; nothing to rotate in a pool that does not load
	}
	now := r.Clock.Now()
	r.observe(pool, now)

	next, requeue, what, err := r.step(pool, secret.Annotations[RequestAnnotation], *sc, now)
	if err != nil {
		r.Recorder.Eventf(&secret, nil, corev1.EventTypeWarning, "RotationFailed", "Rotate", "%s pool: %v", signer, err)
		log.Error(err, "CA rotation step failed", "signer", signer)
		next, what = nil, ""
	}
	_, requested := secret.Annotations[RequestAnnotation]
	if next == nil && !requested {
		return reconcile.Result{RequeueAfter: requeue}, nil
	}
	updated := secret.DeepCopy()
	delete(updated.Annotations, RequestAnnotation)
	if next != nil {
		data, err := next.Marshal()
		if err != nil {
			return reconcile.Result{}, err
		}
		updated.Data[PoolKey] = data
	}
	// The cached resourceVersion makes this a compare-and-swap: a pool
	// changed meanwhile is re-read and the step re-decided.
	if err := r.Store.Client.Update(ctx, updated, client.FieldOwner(FieldManager)); err != nil {
		return reconcile.Result{}, fmt.Errorf("writing the %s pool: %w", signer, err)
	}
	if what != "" {
		log.Info("CA rotation", "signer", signer, "step", what)
		r.Recorder.Eventf(updated, nil, corev1.EventTypeNormal, "CARotation", "Rotate", "%s pool: %s", signer, what)
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// step decides the pool's next state: nil when nothing changes. requeue
// is when to look again (a promotion delay or a retirement running out).
func (r *Rotation) step(pool *signers.Pool, request string, sc SignerConfig, now time.Time) (next *signers.Pool, requeue time.Duration, what string, err error) {
	signer := pool.Signer
	switch request {
	case "":
	case RequestRotate:
		if n := pool.Next(); n != nil {
			return nil, 0, "", fmt.Errorf("a rotation is already under way (next CA %s); promote or abort it first", n.SKID())
		}
		ca, err := signers.NewCA(r.Store.Env, sc.Profile, nil)
		if err != nil {
			return nil, 0, "", err
		}
		if next, err = pool.WithNext(ca, now); err != nil {
			return nil, 0, "", err
		}
		return next, r.PromotionDelay, fmt.Sprintf("added next CA %s; it signs once every member trusting this cluster has applied it and %s have passed", ca.SKID(), r.PromotionDelay), nil
	case RequestPromote:
		if next, err = pool.Promoted(now); err != nil {
			return nil, 0, "", err
		}
		r.count(signer, true)
		return next, 0, "promoted the next CA at the operator's request (forced)", nil
	case RequestAbort:
		if pool.Next() == nil {
			return nil, 0, "", fmt.Errorf("no rotation to abort")
		}
		return pool.WithoutNext(), 0, "aborted the rotation: the next CA is dropped", nil
	default:
		return nil, 0, "", fmt.Errorf("unknown %s %q: use %s, %s or %s", RequestAnnotation, request, RequestRotate, RequestPromote, RequestAbort)
	}

	// CAs put there by hand have no times: their publication starts now,
	// not at the beginning of time.
	if stamped, skids := pool.Stamped(now); len(skids) > 0 {
		return stamped, r.PromotionDelay, fmt.Sprintf("CAs %s found without a publication or retirement time; they are published from now", strings.Join(skids, ", ")), nil
	}
	if n := pool.Next(); n != nil {
		ready := n.AddedAt.Add(r.PromotionDelay)
		if r.Gate != nil {
			// The delay also runs from the moment the last member applied
			// the anchor: that member's kubelets refresh pods' projected
			// bundles only at their next sync.
			distributed := r.Gate.Distributed(signer, hex.EncodeToString(n.Anchor().SubjectKeyId))
			switch {
			case distributed && n.DistributedAt.IsZero():
				return pool.WithNextDistributedAt(now), r.PromotionDelay, fmt.Sprintf("every member trusting this cluster has applied next CA %s; it signs once %s have passed", n.SKID(), r.PromotionDelay), nil
			case !distributed && !n.DistributedAt.IsZero():
				return pool.WithNextDistributedAt(time.Time{}), gateRecheck, fmt.Sprintf("next CA %s is no longer applied by every member trusting this cluster (one joined, or its set changed); its promotion waits for them again", n.SKID()), nil
			case !distributed:
				// The gate's next change re-queues at once; the periodic
				// look keeps anchorage_agent_ca_next_age_seconds growing.
				return nil, gateRecheck, "", nil
			}
			if d := n.DistributedAt.Add(r.PromotionDelay); d.After(ready) {
				ready = d
			}
		}
		if wait := ready.Sub(now); wait > 0 {
			return nil, wait, "", nil
		}
		promoted, err := pool.Promoted(now)
		if err != nil {
			return nil, 0, "", err
		}
		r.count(signer, false)
		return promoted, 0, fmt.Sprintf("promoted next CA %s: every member trusting this cluster has applied it, %s ago at least", n.SKID(), r.PromotionDelay), nil
	}
	if pruned, dropped := pool.Pruned(now); dropped {
		return pruned, 0, "dropped retired CAs whose last leaf has expired", nil
	}
	var soonest time.Duration
	for _, ca := range pool.CAs {
		if ca.State == signers.StateRetired {
			if d := ca.RetiredAt.Add(signers.MaxLeafLifetime).Sub(now); soonest == 0 || d < soonest {
				soonest = d
			}
		}
	}
	return nil, soonest, "", nil
}

func (r *Rotation) count(signer string, forced bool) {
	if r.Metrics != nil {
		r.Metrics.Promotions.WithLabelValues(signer, fmt.Sprint(forced)).Inc()
	}
}

func (r *Rotation) observe(pool *signers.Pool, now time.Time) {
	if r.Metrics == nil {
		return
	}
	counts := map[signers.CAState]int{}
	for _, ca := range pool.CAs {
		counts[ca.State]++
	}
	for _, st := range []signers.CAState{signers.StateNext, signers.StateActive, signers.StateRetired} {
		r.Metrics.CAs.WithLabelValues(pool.Signer, string(st)).Set(float64(counts[st]))
	}
	if n := pool.Next(); n != nil {
		r.Metrics.NextAge.WithLabelValues(pool.Signer).Set(now.Sub(n.AddedAt).Seconds())
	} else {
		r.Metrics.NextAge.WithLabelValues(pool.Signer).Set(0)
	}
}

// RotationMetrics show where each pool is in its rotation.
type RotationMetrics struct {
	CAs        *prometheus.GaugeVec
	NextAge    *prometheus.GaugeVec
	Promotions *prometheus.CounterVec
}

// NewRotationMetrics registers the rotation metrics on reg.
func NewRotationMetrics(reg prometheus.Registerer) *RotationMetrics {
	m := &RotationMetrics{
		CAs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anchorage_agent_ca_pool_cas", Help: "CAs in each signer's pool by state (next, active, retired)."}, []string{"signer", "state"}),
		NextAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anchorage_agent_ca_next_age_seconds",
			Help: "How long the next CA has waited for promotion (0: no rotation under way). Alert when it grows: a member is not applying bundles."}, []string{"signer"}),
		Promotions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anchorage_agent_ca_promotions_total", Help: "CA promotions, by whether an operator forced them."}, []string{"signer", "forced"}),
	}
	reg.MustRegister(m.CAs, m.NextAge, m.Promotions)
	return m
}
