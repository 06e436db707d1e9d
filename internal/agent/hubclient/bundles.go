package hubclient

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	certsv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/anchorage-dev/anchorage/internal/agent/trustbundles"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Follower keeps one long poll open to the hub and applies the federated
// ClusterTrustBundles it answers, then acks. Fail-static: when the hub is
// unreachable or answers garbage, every bundle stays as it is and the
// follower retries with backoff and jitter; only a bundle missing from a
// good answer is deleted.
type Follower struct {
	Hub *federation.Client
	// Client reads ClusterTrustBundles from the cache and writes them.
	Client client.Client
	// PollTimeout bounds one long poll on the client side; above the hub's
	// --long-poll-timeout (60 s).
	PollTimeout time.Duration
	// MaxBackoff caps the wait between failed calls.
	MaxBackoff time.Duration
	Log        logr.Logger
	Metrics    *FollowerMetrics
	// Changes, when set, receives an event after each set applied (the CA
	// rotation gate listens).
	Changes chan event.GenericEvent

	applier    *trustbundles.Applier
	membership atomic.Pointer[bool]
	mu         sync.Mutex
	last       *federation.BundleSet
}

// NeedLeaderElection: the leader alone writes bundles.
func (f *Follower) NeedLeaderElection() bool { return true }

// Start follows the hub until ctx ends.
func (f *Follower) Start(ctx context.Context) error {
	f.applier = &trustbundles.Applier{Client: f.Client, Owns: func(ctb *certsv1.ClusterTrustBundle) bool {
		return ctb.Labels[federation.LabelSource] == federation.SourceHub
	}}
	backoff := f.backoff()
	var after int64
	for ctx.Err() == nil {
		err := f.once(ctx, &after)
		if err == nil {
			backoff = f.backoff()
			continue
		}
		if ctx.Err() != nil {
			break
		}
		d := backoff.Step()
		if f.Metrics != nil {
			f.Metrics.Failures.Inc()
		}
		f.Log.Error(err, "following the hub's bundles failed; every bundle is kept and signing goes on, retrying", "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

func (f *Follower) backoff() wait.Backoff {
	return wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 1 << 30, Cap: f.MaxBackoff}
}

// once waits for one answer, applies it and acks it.
func (f *Follower) once(ctx context.Context, after *int64) error {
	pollCtx, cancel := context.WithTimeout(ctx, f.PollTimeout)
	set, err := f.Hub.Bundles(pollCtx, *after)
	cancel()
	if err != nil {
		return fmt.Errorf("long poll of the hub's bundles: %w", err)
	}
	if set == nil {
		return nil // nothing new within the hub's poll time
	}
	start := time.Now()
	desired, err := Desired(set)
	if err != nil {
		return fmt.Errorf("refusing the hub's bundle set %d, keeping the current bundles: %w", set.Sequence, err)
	}
	res, err := f.applier.Apply(ctx, signers.SignerNames(), desired)
	if err != nil {
		return fmt.Errorf("applying the hub's bundle set %d: %w", set.Sequence, err)
	}
	member := set.ClusterSet
	f.membership.Store(&member)
	if res.Applied+res.Deleted > 0 {
		f.Log.Info("applied the hub's bundle set", "sequence", set.Sequence, "applied", res.Applied, "deleted", res.Deleted)
	}
	if err := f.Hub.Ack(ctx, federation.Ack{Sequence: set.Sequence, BundlesDigest: federation.BundlesDigest(set.Bundles)}); err != nil {
		// Applied but not acked: the next poll from the same sequence
		// returns the same set at once, and the ack is retried.
		return fmt.Errorf("acking bundle set %d: %w", set.Sequence, err)
	}
	*after = set.Sequence
	f.mu.Lock()
	f.last = set
	f.mu.Unlock()
	if f.Metrics != nil {
		f.Metrics.Sequence.Set(float64(set.Sequence))
		f.Metrics.ApplySeconds.Observe(time.Since(start).Seconds())
		f.Metrics.Bundles.Set(float64(len(set.Bundles)))
	}
	if f.Changes != nil {
		select {
		case f.Changes <- event.GenericEvent{Object: &certsv1.ClusterTrustBundle{}}:
		default: // one pending event is enough: the receiver reads Last
		}
	}
	return nil
}

// Distributed reports whether the hub's last answer says the anchor has
// reached every member that trusts it (the CA promotion gate). No answer
// yet, or an anchor the hub does not list yet, is not distributed.
func (f *Follower) Distributed(signer, skid string) bool {
	last := f.Last()
	if last == nil {
		return false
	}
	for _, a := range last.Anchors {
		if a.Signer == signer && a.SubjectKeyID == skid {
			return a.Distributed
		}
	}
	return false
}

// Last returns the last set applied and acked, nil before the first.
func (f *Follower) Last() *federation.BundleSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// InClusterset reports the hub's last word on clusterset membership.
// Before any answer (the agent just started, the hub is down) it keeps
// what the cluster shows: the clusterset bundle the hub pushed earlier.
func (f *Follower) InClusterset() bool {
	if m := f.membership.Load(); m != nil {
		return *m
	}
	var ctb certsv1.ClusterTrustBundle
	return f.Client.Get(context.Background(), client.ObjectKey{Name: federation.ClustersetBundleName()}, &ctb) == nil
}

// Desired checks a hub answer and turns it into the bundles to apply. A
// bundle must be one the hub may push (a federated SPIFFE trust domain or
// the clusterset bundle, with the hub's source label) and hold CA
// certificates only; anything else refuses the whole set, which keeps
// every current bundle.
func Desired(set *federation.BundleSet) ([]trustbundles.Bundle, error) {
	out := make([]trustbundles.Bundle, 0, len(set.Bundles))
	seen := map[string]bool{}
	for _, b := range set.Bundles {
		var ok bool
		switch b.SignerName {
		case signers.SPIFFESignerName:
			ok = strings.HasPrefix(b.Name, strings.TrimSuffix(federation.TrustDomainBundleName("x"), "x")) &&
				b.Name == federation.TrustDomainBundleName(b.Labels[federation.LabelPeerTrustDomain])
		case signers.ServiceDNSSignerName:
			ok = b.Name == federation.ClustersetBundleName()
		}
		if !ok || b.Labels[federation.LabelSource] != federation.SourceHub || seen[b.Name] {
			return nil, fmt.Errorf("bundle %q of signer %q is not one the hub may push", b.Name, b.SignerName)
		}
		seen[b.Name] = true
		certs, err := signers.ParseCertificatesPEM([]byte(b.TrustBundle))
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", b.Name, err)
		}
		for _, c := range certs {
			if !c.IsCA || !c.BasicConstraintsValid {
				return nil, fmt.Errorf("bundle %s: %q is not a CA certificate", b.Name, c.Subject)
			}
		}
		out = append(out, trustbundles.Bundle{Name: b.Name, Signer: b.SignerName, Labels: b.Labels, Anchors: certs})
	}
	return out, nil
}

// FollowerMetrics describe the agent's side of the push.
type FollowerMetrics struct {
	Sequence     prometheus.Gauge
	Bundles      prometheus.Gauge
	Failures     prometheus.Counter
	ApplySeconds prometheus.Histogram
}

// NewFollowerMetrics registers the follower's metrics on reg.
func NewFollowerMetrics(reg prometheus.Registerer) *FollowerMetrics {
	m := &FollowerMetrics{
		Sequence: prometheus.NewGauge(prometheus.GaugeOpts{Name: "anchorage_agent_bundle_set_sequence", Help: "Sequence of the hub's bundle set last applied and acked."}),
		Bundles:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "anchorage_agent_federated_bundles", Help: "Federated ClusterTrustBundles held from the hub's last answer."}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "anchorage_agent_hub_poll_failures_total", Help: "Failed long polls, applies or acks (each kept every bundle)."}),
		ApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anchorage_agent_bundle_set_apply_seconds", Help: "Time to apply and ack one bundle set.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
	}
	reg.MustRegister(m.Sequence, m.Bundles, m.Failures, m.ApplySeconds)
	return m
}
