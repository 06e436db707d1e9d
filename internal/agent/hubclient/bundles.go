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
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	certsv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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
// good answer (and not in its Keep) is deleted. Between answers it repairs:
// when a hub-sourced bundle is edited or deleted, and every Resync, it
// re-applies the last good answer without calling the hub.
type Follower struct {
	Hub *federation.Client
	// Client reads ClusterTrustBundles from the cache and writes them.
	Client client.Client
	// Informers is the cache behind Client: its ClusterTrustBundle
	// informer tells the follower when a bundle of the hub's is touched.
	Informers cache.Informers
	// PollTimeout bounds one long poll on the client side; slightly above
	// the hub's --long-poll-timeout (60 s).
	PollTimeout time.Duration
	// AckTimeout bounds one ack (the hub client has no overall timeout);
	// zero means callTimeout.
	AckTimeout time.Duration
	// Resync is how often the last good answer is re-applied even when no
	// event said a bundle changed (a missed watch event, say); zero: only
	// on events.
	Resync time.Duration
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
	// applyMu serialises applies, so that a repair never writes an answer
	// older than the one just applied; want is the last good answer.
	applyMu sync.Mutex
	want    *trustbundles.Set
	repairs atomic.Int64
}

// NeedLeaderElection: the leader alone writes bundles.
func (f *Follower) NeedLeaderElection() bool { return true }

// Start follows the hub until ctx ends.
func (f *Follower) Start(ctx context.Context) error {
	f.applier = &trustbundles.Applier{Client: f.Client, Owns: fromHub}
	touched := make(chan struct{}, 1)
	inf, err := f.Informers.GetInformer(ctx, &certsv1.ClusterTrustBundle{})
	if err != nil {
		return fmt.Errorf("watching ClusterTrustBundles: %w", err)
	}
	reg, err := inf.AddEventHandler(hubBundleTouched(touched))
	if err != nil {
		return fmt.Errorf("watching ClusterTrustBundles: %w", err)
	}
	defer func() { _ = inf.RemoveEventHandler(reg) }()
	repairs := make(chan struct{})
	go func() {
		defer close(repairs)
		f.repairLoop(ctx, touched)
	}()
	defer func() { <-repairs }()

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
		f.failed()
		f.Log.Error(err, "following the hub's bundles failed; every bundle is kept and signing goes on, retrying", "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

// fromHub: the follower owns the bundles named as the hub's (DESIGN.md's
// table), by name rather than by label, so that a bundle whose label was
// removed is still restored, or deleted once the hub drops it.
func fromHub(ctb *certsv1.ClusterTrustBundle) bool {
	return trustDomainBundle(ctb.Name) || ctb.Name == federation.ClustersetBundleName()
}

// hubBundleTouched signals touched when a bundle of the hub's is created,
// changed or deleted; one pending signal is enough.
func hubBundleTouched(touched chan<- struct{}) toolscache.ResourceEventHandler {
	signal := func(objs ...any) {
		for _, o := range objs {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if ctb, ok := o.(*certsv1.ClusterTrustBundle); ok && fromHub(ctb) {
				select {
				case touched <- struct{}{}:
				default:
				}
				return
			}
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { signal(o) },
		UpdateFunc: func(_, o any) { signal(o) },
		DeleteFunc: func(o any) { signal(o) },
	}
}

// repairLoop re-applies the last good answer when a hub bundle is touched
// and every Resync, until ctx ends. A failure waits for the next event or
// tick (the long poll goes on meanwhile).
func (f *Follower) repairLoop(ctx context.Context, touched <-chan struct{}) {
	var tick <-chan time.Time // zero Resync: events only
	if f.Resync > 0 {
		t := time.NewTicker(f.Resync)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-touched:
		case <-tick:
		}
		if err := f.repair(ctx); err != nil && ctx.Err() == nil {
			f.failed()
			f.Log.Error(err, "repairing the hub's bundles failed; retrying at the next change or resync", "in", f.Resync)
		}
		f.repairs.Add(1)
	}
}

// Repairs counts the repair passes run, whether they wrote or not.
func (f *Follower) Repairs() int64 { return f.repairs.Load() }

// repair re-applies the last good answer, writing only what differs.
func (f *Follower) repair(ctx context.Context) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.want == nil {
		return nil // no answer yet: keep everything as it is
	}
	res, err := f.applier.Apply(ctx, signers.SignerNames(), *f.want)
	if res.Applied+res.Deleted > 0 {
		f.Log.Info("repaired the hub's bundles", "applied", res.Applied, "deleted", res.Deleted)
	}
	if err != nil {
		return fmt.Errorf("re-applying the hub's last bundle set: %w", err)
	}
	return nil
}

// apply makes want the answer to hold and applies it.
func (f *Follower) apply(ctx context.Context, want trustbundles.Set) (trustbundles.Result, error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.want = &want
	return f.applier.Apply(ctx, signers.SignerNames(), want)
}

func (f *Follower) failed() {
	if f.Metrics != nil {
		f.Metrics.Failures.Inc()
	}
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
	want, tooBig, err := Desired(set)
	if err != nil {
		return fmt.Errorf("refusing the hub's bundle set %d, keeping the current bundles: %w", set.Sequence, err)
	}
	res, err := f.apply(ctx, want)
	if res.Applied+res.Deleted > 0 {
		f.Log.Info("applied the hub's bundle set", "sequence", set.Sequence, "applied", res.Applied, "deleted", res.Deleted)
	}
	if err != nil {
		// Not acked: the next poll from the same sequence returns the
		// same set at once, and what failed is retried.
		return fmt.Errorf("applying the hub's bundle set %d: %w", set.Sequence, err)
	}
	if len(tooBig) > 0 {
		// Never acked: the hub shows the member BundleSetPending, and
		// peers' promotions wait, until the hub sends what fits.
		return fmt.Errorf("bundle set %d applied but for %s, over the ClusterTrustBundle limit of %d bytes, which the apiserver would never accept: kept as the cluster holds them, set not acked", set.Sequence, strings.Join(tooBig, ", "), trustbundles.MaxBundleBytes)
	}
	member := set.ClusterSet
	f.membership.Store(&member)
	ackTimeout := f.AckTimeout
	if ackTimeout == 0 {
		ackTimeout = callTimeout
	}
	ackCtx, cancel := context.WithTimeout(ctx, ackTimeout)
	err = f.Hub.Ack(ackCtx, federation.Ack{Sequence: set.Sequence, BundlesDigest: federation.BundlesDigest(set.Bundles)})
	cancel()
	if err != nil {
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

// Desired checks a hub answer and turns it into the bundles to apply and
// the names to keep. A bundle must be one the hub may push (a federated
// SPIFFE trust domain or the clusterset bundle, with the hub's source
// label) and hold CA certificates only; a kept name must be a federated
// SPIFFE trust domain's, listed once and not also a bundle. Anything else
// refuses the whole set, which keeps every current bundle. A good bundle
// over the ClusterTrustBundle limit can never be written: it is kept as
// the cluster holds it and named in tooBig, so that the rest of the set
// still applies.
func Desired(set *federation.BundleSet) (want trustbundles.Set, tooBig []string, err error) {
	out := trustbundles.Set{Bundles: make([]trustbundles.Bundle, 0, len(set.Bundles))}
	seen := map[string]bool{}
	for _, b := range set.Bundles {
		var ok bool
		switch b.SignerName {
		case signers.SPIFFESignerName:
			ok = trustDomainBundle(b.Name) && b.Name == federation.TrustDomainBundleName(b.Labels[federation.LabelPeerTrustDomain])
		case signers.ServiceDNSSignerName:
			ok = b.Name == federation.ClustersetBundleName()
		}
		if !ok || b.Labels[federation.LabelSource] != federation.SourceHub || seen[b.Name] {
			return trustbundles.Set{}, nil, fmt.Errorf("bundle %q of signer %q is not one the hub may push", b.Name, b.SignerName)
		}
		seen[b.Name] = true
		certs, err := signers.ParseCertificatesPEM([]byte(b.TrustBundle))
		if err != nil {
			return trustbundles.Set{}, nil, fmt.Errorf("bundle %s: %w", b.Name, err)
		}
		for _, c := range certs {
			if !c.IsCA || !c.BasicConstraintsValid {
				return trustbundles.Set{}, nil, fmt.Errorf("bundle %s: %q is not a CA certificate", b.Name, c.Subject)
			}
		}
		// What is written is the canonical PEM of the certificates.
		if len(signers.EncodeCertificatesPEM(certs)) > trustbundles.MaxBundleBytes {
			tooBig = append(tooBig, b.Name)
			out.Keep = append(out.Keep, b.Name)
			continue
		}
		out.Bundles = append(out.Bundles, trustbundles.Bundle{Name: b.Name, Signer: b.SignerName, Labels: b.Labels, Anchors: certs})
	}
	for _, name := range set.Keep {
		if !trustDomainBundle(name) {
			return trustbundles.Set{}, nil, fmt.Errorf("kept bundle %q is not a federated trust domain's bundle the hub may push", name)
		}
		if seen[name] {
			return trustbundles.Set{}, nil, fmt.Errorf("bundle %q is both kept and listed before in the same answer", name)
		}
		seen[name] = true
		out.Keep = append(out.Keep, name)
	}
	return out, tooBig, nil
}

// trustDomainBundle reports whether name is the federated SPIFFE bundle
// name of some trust domain (federation.TrustDomainBundleName).
func trustDomainBundle(name string) bool {
	prefix := strings.TrimSuffix(federation.TrustDomainBundleName("x"), "x")
	td, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	// A sanitized name holds no "_", so it is its own trust domain name.
	_, err := spiffeid.TrustDomainFromString(td)
	return err == nil && federation.TrustDomainBundleName(td) == name
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
