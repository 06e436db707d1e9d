package trustdomains

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

// Defaults of the Reconciler's zero fields.
const (
	// DefaultRefreshHint is used when a bundle carries no refresh hint (as
	// SPIRE's bundle endpoint default).
	DefaultRefreshHint = 5 * time.Minute
	// DefaultMinRefreshHint is SPIRE's MinimumRefreshHint.
	DefaultMinRefreshHint = time.Minute
	// DefaultMaxRefreshHint bounds a served hint, so that a huge one cannot
	// stop polling.
	DefaultMaxRefreshHint = time.Hour
	// DefaultAttemptsPerRefreshHint is SPIRE's attemptsPerRefreshHint: the
	// poll interval is the hint divided by it.
	DefaultAttemptsPerRefreshHint = 4
	// DefaultRetryBase is the first retry delay after a failed fetch; it
	// doubles with every further failure.
	DefaultRetryBase = 5 * time.Second
	// DefaultFetchTimeout bounds one fetch.
	DefaultFetchTimeout = 30 * time.Second
	// DefaultWorkers is how many trust domains are fetched at once.
	DefaultWorkers = 4
)

// ControllerName names the controller and is the Event reporter.
const ControllerName = "anchorage-hub-trustdomains"

// Event reasons and the Event action.
const (
	// EventReasonBundleUpdated (Normal): a new bundle was stored.
	EventReasonBundleUpdated = "BundleUpdated"
	eventActionFetch         = "FetchBundle"
)

// FetchFunc fetches the bundle of trustDomain from url; it has the signature
// of federation.FetchBundle.
type FetchFunc func(ctx context.Context, trustDomain spiffeid.TrustDomain, url string, opts ...federation.FetchOption) (*spiffebundle.Bundle, error)

// Reconciler polls the bundle endpoint of every TrustDomain. Zero durations
// and counts take the Default* values.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Clock    clock.PassiveClock

	// RootCAs are the roots https_web endpoints are verified with; nil means
	// the system roots.
	RootCAs *x509.CertPool
	// Fetch fetches a bundle; nil means federation.FetchBundle. It is the
	// seam for another HTTP client or transport (federation.FetchBundle
	// always clones http.DefaultTransport) and for tests.
	Fetch FetchFunc
	// FetchTimeout bounds one fetch.
	FetchTimeout time.Duration

	DefaultRefreshHint     time.Duration
	MinRefreshHint         time.Duration
	MaxRefreshHint         time.Duration
	AttemptsPerRefreshHint int
	// RetryBase is the delay before the first retry of a failed fetch.
	RetryBase time.Duration
	// Workers is how many trust domains are fetched at once.
	Workers int
	// Metrics may be nil.
	Metrics *Metrics

	mu sync.Mutex
	// failures: consecutive failed fetches per TrustDomain name; keyed by
	// name so that a delete (whose request has no UID) forgets it.
	failures map[string]failureCount
}

type failureCount struct {
	uid types.UID // a re-created TrustDomain starts again
	n   int
}

// SetupWithManager registers the controller with mgr. It reacts to creates,
// deletes and spec changes only (its own status writes do not re-trigger a
// fetch) and runs on the leader only.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder(ControllerName)
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("trustdomains").
		For(&hubv1alpha1.TrustDomain{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: cmp.Or(r.Workers, DefaultWorkers),
			NeedLeaderElection:      ptr.To(true),
		}).
		Complete(r)
}

// outcome of one poll.
type outcome struct {
	reason string // a hubv1alpha1.Reason*
	err    error  // nil on success
	bundle *spiffebundle.Bundle
}

// Reconcile fetches one TrustDomain's bundle and schedules the next poll.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var td hubv1alpha1.TrustDomain
	if err := r.Client.Get(ctx, req.NamespacedName, &td); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading TrustDomain %s: %w", req.Name, err)
	}
	log = log.WithValues("trustDomain", td.Spec.TrustDomain, "url", td.Spec.BundleEndpoint.URL)
	ctx = ctrl.LoggerInto(ctx, log)
	if !td.DeletionTimestamp.IsZero() {
		r.forget(td.Name)
		return reconcile.Result{}, nil
	}

	if err := td.Validate(); err != nil {
		r.forget(td.Name)
		err = fmt.Errorf("invalid spec, fix it to resume polling: %w", err)
		if err := r.writeStatus(ctx, &td, outcome{reason: hubv1alpha1.ReasonInvalidSpec, err: err}); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil // a spec change re-queues
	}

	o := r.poll(ctx, &td)
	r.Metrics.observe(o.reason)
	if err := r.writeStatus(ctx, &td, o); err != nil {
		return reconcile.Result{}, err
	}
	if o.err == nil {
		r.forget(td.Name)
		next := r.pollInterval(o.bundle)
		log.V(1).Info("fetched bundle", "next", next)
		return reconcile.Result{RequeueAfter: next}, nil
	}
	if o.reason == hubv1alpha1.ReasonInvalidBundle && errors.Is(o.err, errBadBootstrap) {
		return reconcile.Result{}, nil // only a spec change helps
	}
	next := r.retryAfter(&td)
	log.Info("bundle fetch failed", "reason", o.reason, "error", o.err.Error(), "retryAfter", next)
	return reconcile.Result{RequeueAfter: next}, nil
}

var errBadBootstrap = errors.New("spec.bootstrapBundle")

// poll fetches and checks the bundle.
func (r *Reconciler) poll(ctx context.Context, td *hubv1alpha1.TrustDomain) outcome {
	trustDomain, err := spiffeid.TrustDomainFromString(td.Spec.TrustDomain)
	if err != nil { // Validate checked it
		return outcome{reason: hubv1alpha1.ReasonInvalidSpec, err: fmt.Errorf("spec.trustDomain: %w", err)}
	}
	var opts []federation.FetchOption
	switch td.Spec.BundleEndpoint.Profile {
	case hubv1alpha1.ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(td.Spec.BundleEndpoint.EndpointSPIFFEID)
		if err != nil { // Validate checked it
			return outcome{reason: hubv1alpha1.ReasonInvalidSpec, err: fmt.Errorf("spec.bundleEndpoint.endpointSPIFFEID: %w", err)}
		}
		source, o := r.authBundle(ctx, td, trustDomain, id.TrustDomain())
		if o != nil {
			return *o
		}
		opts = append(opts, federation.WithSPIFFEAuth(source, id))
	default:
		opts = append(opts, federation.WithWebPKIRoots(r.RootCAs))
	}

	fetch := r.Fetch
	if fetch == nil {
		fetch = federation.FetchBundle
	}
	fctx, cancel := context.WithTimeout(ctx, cmp.Or(r.FetchTimeout, DefaultFetchTimeout))
	defer cancel()
	b, err := fetch(fctx, trustDomain, td.Spec.BundleEndpoint.URL, opts...)
	if err != nil {
		if !transportError(err) {
			return outcome{reason: hubv1alpha1.ReasonInvalidBundle, err: fmt.Errorf("the answer of %s is not a good SPIFFE bundle (is the URL the bundle endpoint of %s?): %w", td.Spec.BundleEndpoint.URL, trustDomain, err)}
		}
		return outcome{reason: hubv1alpha1.ReasonFetchFailed, err: fmt.Errorf("fetching the bundle of %s from %s: %w", trustDomain, td.Spec.BundleEndpoint.URL, err)}
	}
	if err := checkBundle(trustDomain, b); err != nil {
		return outcome{reason: hubv1alpha1.ReasonInvalidBundle, err: fmt.Errorf("bundle from %s: %w", td.Spec.BundleEndpoint.URL, err)}
	}
	return outcome{reason: hubv1alpha1.ReasonBundleFetched, bundle: b}
}

// transportError tells a failure to get an answer (FetchFailed) from an
// answer that is not a good bundle (InvalidBundle). federation.FetchBundle
// wraps transport errors (*url.Error) with %w, but a failure to read the body
// only as text, and it does not look at the HTTP status: an error page with
// any status is an answer that does not parse.
func transportError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		strings.Contains(err.Error(), "spiffebundle: unable to read:")
}

// authBundle returns the bundle an https_spiffe endpoint's SVID is verified
// with: the bundle of endpointTD.
func (r *Reconciler) authBundle(ctx context.Context, td *hubv1alpha1.TrustDomain, trustDomain, endpointTD spiffeid.TrustDomain) (*spiffebundle.Bundle, *outcome) {
	if endpointTD == trustDomain {
		if b, err := parseBundle(trustDomain, td.CurrentBundle()); err == nil && b != nil {
			return b, nil
		}
		if td.Spec.BootstrapBundle == "" {
			return nil, &outcome{reason: hubv1alpha1.ReasonFetchFailed,
				err: fmt.Errorf("no bundle of %s to authenticate the endpoint with: set spec.bootstrapBundle", trustDomain)}
		}
		b, err := parseBundle(trustDomain, td.Spec.BootstrapBundle)
		if err == nil {
			err = checkBundle(trustDomain, b)
		}
		if err != nil {
			return nil, &outcome{reason: hubv1alpha1.ReasonInvalidBundle, err: fmt.Errorf("%w: %w", errBadBootstrap, err)}
		}
		return b, nil
	}
	// The endpoint is in another trust domain: use the hub's copy of it.
	var list hubv1alpha1.TrustDomainList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil, &outcome{reason: hubv1alpha1.ReasonFetchFailed, err: fmt.Errorf("listing TrustDomains: %w", err)}
	}
	for i := range list.Items {
		other := &list.Items[i]
		if other.Spec.TrustDomain != endpointTD.Name() || other.CurrentBundle() == "" {
			continue
		}
		if b, err := parseBundle(endpointTD, other.CurrentBundle()); err == nil {
			return b, nil
		}
	}
	return nil, &outcome{reason: hubv1alpha1.ReasonFetchFailed,
		err: fmt.Errorf("no bundle of %s, the endpoint SPIFFE ID's trust domain: create a TrustDomain for it", endpointTD)}
}

// parseBundle parses a stored bundle; "" is (nil, nil).
func parseBundle(td spiffeid.TrustDomain, s string) (*spiffebundle.Bundle, error) {
	if s == "" {
		return nil, nil
	}
	b, err := spiffebundle.Parse(td, []byte(s))
	if err != nil {
		return nil, fmt.Errorf("parsing SPIFFE bundle of %s: %w", td, err)
	}
	return b, nil
}

// checkBundle rejects an empty bundle and one with an X.509 authority that
// names another trust domain (the bundle document itself does not say whose
// it is).
func checkBundle(td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
	if b.Empty() {
		return fmt.Errorf("the bundle of %s is empty; an empty bundle would revoke every SVID of the trust domain", td)
	}
	for _, a := range b.X509Authorities() {
		for _, u := range a.URIs {
			if u.Scheme == "spiffe" && u.Host != td.Name() {
				return fmt.Errorf("authority %q is of trust domain %q, not %q: is the URL the bundle endpoint of %s?", a.Subject, u.Host, td.Name(), td.Name())
			}
		}
	}
	return nil
}

// keepable: td's stored bundle may stay as the last good one. A bundle
// stored by a hub older than bundleTrustDomain (when trust domains could
// be renamed) must first pass the checks a fetched one does; it is then
// recorded as this trust domain's.
func keepable(td *hubv1alpha1.TrustDomain) bool {
	doc := td.CurrentBundle()
	if doc == "" || td.Status.BundleTrustDomain != "" {
		return doc != ""
	}
	trustDomain, err := spiffeid.TrustDomainFromString(td.Spec.TrustDomain)
	if err != nil {
		return false
	}
	b, err := parseBundle(trustDomain, doc)
	return err == nil && checkBundle(trustDomain, b) == nil
}

// writeStatus writes the status for o, if it changes anything.
func (r *Reconciler) writeStatus(ctx context.Context, td *hubv1alpha1.TrustDomain, o outcome) error {
	now := metav1.NewTime(r.Clock.Now())
	st := td.Status.DeepCopy()
	st.ObservedGeneration = td.Generation
	cond := metav1.Condition{
		Type:               hubv1alpha1.ConditionReady,
		Reason:             o.reason,
		ObservedGeneration: td.Generation,
		LastTransitionTime: now,
	}
	var updated bool
	if o.err == nil {
		trustDomain := o.bundle.TrustDomain()
		old, _ := parseBundle(trustDomain, td.CurrentBundle())
		if !o.bundle.Equal(old) {
			body, err := o.bundle.Marshal()
			if err != nil {
				return fmt.Errorf("marshalling the bundle of %s: %w", trustDomain, err)
			}
			st.Bundle = string(body)
			updated = true
		}
		st.BundleTrustDomain = trustDomain.Name()
		st.SequenceNumber = 0
		if seq, ok := o.bundle.SequenceNumber(); ok {
			st.SequenceNumber = int64(min(seq, math.MaxInt64))
		}
		st.RefreshHint = 0
		if hint, ok := o.bundle.RefreshHint(); ok && hint > 0 {
			st.RefreshHint = int64((hint + time.Second - 1) / time.Second)
		}
		st.LastFetchError = ""
		cond.Status = metav1.ConditionTrue
		cond.Message = fmt.Sprintf("fetched a bundle of %s with %d X.509 and %d JWT authorities", trustDomain, len(o.bundle.X509Authorities()), len(o.bundle.JWTAuthorities()))
	} else {
		msg := o.err.Error()
		if o.reason != hubv1alpha1.ReasonInvalidSpec {
			st.LastFetchError = msg
		}
		if keepable(td) {
			msg += "; keeping the last good bundle"
			st.BundleTrustDomain = td.Spec.TrustDomain
		} else {
			// A bundle fetched for another trust domain is no good bundle
			// of this one: never keep it.
			st.Bundle, st.BundleTrustDomain, st.SequenceNumber, st.RefreshHint = "", "", 0, 0
		}
		cond.Status = metav1.ConditionFalse
		cond.Message = truncate(msg, 32*1024)
		st.LastFetchError = truncate(st.LastFetchError, 32*1024)
		r.Recorder.Eventf(td, nil, corev1.EventTypeWarning, o.reason, eventActionFetch, "%s", cond.Message)
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	if equality.Semantic.DeepEqual(*st, td.Status) {
		return nil
	}
	if o.reason != hubv1alpha1.ReasonInvalidSpec {
		st.LastFetchTime = &now
	}
	td.Status = *st
	if err := r.Client.Status().Update(ctx, td); err != nil {
		return fmt.Errorf("writing the status of TrustDomain %s: %w", td.Name, err)
	}
	if updated {
		r.Recorder.Eventf(td, nil, corev1.EventTypeNormal, EventReasonBundleUpdated, eventActionFetch, "stored a new bundle of %s (sequence %d)", td.Spec.TrustDomain, st.SequenceNumber)
		ctrl.LoggerFrom(ctx).Info("stored a new bundle", "sequence", st.SequenceNumber, "refreshHint", st.RefreshHint)
	}
	return nil
}

// RefreshHint is the hint the poll interval is derived from: the bundle's,
// or DefaultRefreshHint when it has none, clamped to [MinRefreshHint,
// MaxRefreshHint].
func (r *Reconciler) RefreshHint(b *spiffebundle.Bundle) time.Duration {
	hint := cmp.Or(r.DefaultRefreshHint, DefaultRefreshHint)
	if b != nil {
		if h, ok := b.RefreshHint(); ok && h > 0 {
			hint = h
		}
	}
	return min(max(hint, cmp.Or(r.MinRefreshHint, DefaultMinRefreshHint)), cmp.Or(r.MaxRefreshHint, DefaultMaxRefreshHint))
}

// pollInterval is SPIRE's: the refresh hint divided by the attempts per hint.
func (r *Reconciler) pollInterval(b *spiffebundle.Bundle) time.Duration {
	return r.RefreshHint(b) / time.Duration(cmp.Or(r.AttemptsPerRefreshHint, DefaultAttemptsPerRefreshHint))
}

// retryAfter counts a failure of td and returns the backoff: RetryBase
// doubled per consecutive failure, at most the regular poll interval of the
// last good bundle.
func (r *Reconciler) retryAfter(td *hubv1alpha1.TrustDomain) time.Duration {
	r.mu.Lock()
	if r.failures == nil {
		r.failures = map[string]failureCount{}
	}
	f := r.failures[td.Name]
	if f.uid != td.UID {
		f = failureCount{uid: td.UID}
	}
	f.n++
	r.failures[td.Name] = f
	n := f.n
	r.mu.Unlock()

	var last *spiffebundle.Bundle
	if trustDomain, err := spiffeid.TrustDomainFromString(td.Spec.TrustDomain); err == nil {
		last, _ = parseBundle(trustDomain, td.CurrentBundle())
	}
	ceiling := r.pollInterval(last)
	d := cmp.Or(r.RetryBase, DefaultRetryBase)
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

func (r *Reconciler) forget(name string) {
	r.mu.Lock()
	delete(r.failures, name)
	r.mu.Unlock()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
