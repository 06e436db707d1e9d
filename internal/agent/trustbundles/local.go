package trustbundles

import (
	"context"
	"fmt"
	"slices"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// PoolSource hands out a signer's current CA pool.
type PoolSource interface {
	Pool(signer string) (*signers.Pool, error)
}

// Local publishes this cluster's anchors: anchorage.dev:spiffe:local and
// anchorage.dev:service-dns:local.
type Local struct {
	Client      client.Client
	Pools       PoolSource
	TrustDomain string
	Clock       clock.PassiveClock
	Recorder    events.EventRecorder
	// EventObject is what failure Events are recorded against (the
	// agent's Deployment or pod, say); nil records none.
	EventObject client.Object
	applier     *Applier
}

// SetupWithManager re-publishes when a pool changes (poolChanges) or
// someone else edits one of our bundles.
func (l *Local) SetupWithManager(mgr ctrl.Manager, poolChanges <-chan event.GenericEvent) error {
	l.applier = &Applier{Client: l.Client, Owns: ownedByLocal}
	// One key for everything: each reconcile converges both bundles.
	always := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "local-trust-bundles"}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("local-trust-bundles").
		WatchesRawSource(source.Channel(poolChanges, always)).
		Watches(&certsv1.ClusterTrustBundle{}, always).
		Complete(l)
}

// ownedByLocal: the local publisher owns its own names only. Anything
// else of our signers (a federated bundle whose hub label someone removed,
// an operator's own bundle) is not its to delete.
func ownedByLocal(ctb *certsv1.ClusterTrustBundle) bool {
	return slices.ContainsFunc(signers.SignerNames(), func(s string) bool { return ctb.Name == LocalName(s) })
}

// Reconcile converges both local bundles.
func (l *Local) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	now := l.Clock.Now()
	var desired []Bundle
	var next time.Time // when a retired CA drops out of the bundle
	for _, signer := range signers.SignerNames() {
		pool, err := l.Pools.Pool(signer)
		if err != nil {
			// Not loaded yet: publish nothing rather than an empty bundle
			// (which the API rejects anyway); the pool's arrival re-queues.
			return reconcile.Result{}, nil
		}
		anchors := pool.Anchors(now)
		if signer == signers.SPIFFESignerName {
			desired = append(desired, LocalSPIFFE(l.TrustDomain, anchors))
		} else {
			desired = append(desired, LocalServiceDNS(anchors))
		}
		for _, ca := range pool.CAs {
			if ca.State == signers.StateRetired {
				if end := ca.RetiredAt.Add(signers.MaxLeafLifetime); end.After(now) && (next.IsZero() || end.Before(next)) {
					next = end
				}
			}
		}
	}
	res, err := l.applier.Apply(ctx, signers.SignerNames(), Set{Bundles: desired})
	if err != nil {
		if l.EventObject != nil {
			l.Recorder.Eventf(l.EventObject, nil, corev1.EventTypeWarning, "TrustBundlePublishFailed", "Publish", "%v", err)
		}
		return reconcile.Result{}, fmt.Errorf("publishing local trust bundles: %w", err)
	}
	if res.Applied+res.Deleted > 0 {
		ctrl.LoggerFrom(ctx).Info("published local trust bundles", "applied", res.Applied, "deleted", res.Deleted)
	}
	if !next.IsZero() {
		return reconcile.Result{RequeueAfter: next.Sub(now) + time.Second}, nil
	}
	return reconcile.Result{}, nil
}
