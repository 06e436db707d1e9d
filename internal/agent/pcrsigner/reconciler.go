package pcrsigner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Condition reasons anchorage writes besides the API's own.
const (
	ReasonIssued              = "Issued"
	ReasonPodUIDMismatch      = "PodUIDMismatch"
	ReasonPodMismatch         = "PodMismatch"
	ReasonInvalidStubCSR      = "InvalidStubPKCS10Request"
	ReasonCAExpiring          = "CAExpiring"
	FieldManager              = "anchorage-member-agent"
	defaultPendingRetry       = 10 * time.Second
	waitingForPoolRetry       = 10 * time.Second // PoolChanges normally re-queues sooner
	caExpiringRetry           = 30 * time.Second
	eventActionSign           = "Sign"
	eventActionWaitForService = "Wait"
	maxListed                 = 3 // unknown user annotation keys named in a denial
)

// PoolSource hands out a signer's current CA pool.
type PoolSource interface {
	Pool(signer string) (*signers.Pool, error)
}

// Reconciler signs one signer's PodCertificateRequests.
type Reconciler struct {
	Signer  string
	Profile Profile
	// Requests reads the signer's requests (an informer filtered by
	// spec.signerName).
	Requests client.Reader
	// Client writes statuses and reads pods from the manager's cache.
	Client client.Client
	// APIReader confirms a pod UID mismatch with a live read before
	// denying: the cache may lag a pod that was just re-created.
	APIReader client.Reader
	Pools     PoolSource
	// PoolChanges, when set, fires when a pool is (re)loaded: requests that
	// waited for it are re-queued at once.
	PoolChanges <-chan event.GenericEvent
	// Issuer is the cluster's OIDC issuer URL embedded in certificates.
	Issuer string
	Keys   signers.KeyPolicy
	// PendingTimeout: a Pending request is Failed once this old.
	PendingTimeout time.Duration
	Env            signers.Env
	Clock          clock.PassiveClock
	Recorder       events.EventRecorder
	Metrics        *Metrics
}

// SetupWithManager starts a controller named after the signer, fed by
// requests (a cache that holds only this signer's requests). It adds
// requests to the manager among its caches: started with the manager's
// own, on every replica and before leader election, and waited for until
// synced. So a new leader signs at once, and a cold start lists requests
// and pods together rather than one after the other.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, requests cache.Cache, workers int) error {
	r.Requests = requests
	// The informer is registered now so that the cache lists requests as
	// soon as it starts; one made by the source later would be listed only
	// once the manager's caches are all synced, and waited for again.
	if _, err := requests.GetInformer(context.Background(), &certsv1.PodCertificateRequest{}, cache.BlockUntilSynced(false)); err != nil {
		return fmt.Errorf("watching %s requests: %w", r.Signer, err)
	}
	if err := mgr.Add(startedWithCaches{requests}); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("pcr-" + signers.Slug(r.Signer)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		WatchesRawSource(noWait{source.Kind(requests, &certsv1.PodCertificateRequest{}, &handler.TypedEnqueueRequestForObject[*certsv1.PodCertificateRequest]{},
			// Terminal requests are frozen: never queue them.
			predicate.NewTypedPredicateFuncs(func(o *certsv1.PodCertificateRequest) bool { return !Terminal(o) }))})
	if r.PoolChanges != nil {
		b = b.WatchesRawSource(source.Channel(r.PoolChanges, EnqueuePending(requests, false)))
	}
	if w, ok := r.Profile.(Watcher); ok {
		b = w.Watch(b, requests)
	}
	if r.Metrics != nil {
		r.Metrics.registerPending(r.Signer, requests)
	}
	return b.Complete(r)
}

// Reconcile takes one request to Issued, Denied or Failed, or leaves it
// pending and says why.
func (r *Reconciler) Reconcile(ctx context.Context, key ctrl.Request) (ctrl.Result, error) {
	var req certsv1.PodCertificateRequest
	if err := r.Requests.Get(ctx, key.NamespacedName, &req); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if req.Spec.SignerName != r.Signer || Terminal(&req) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("pod", req.Spec.PodName, "signer", r.Signer)
	ctx = ctrl.LoggerInto(ctx, log)

	pod, pub, err := r.check(ctx, &req)
	var denial *Denial
	if errors.As(err, &denial) {
		return ctrl.Result{}, r.finish(ctx, &req, pod, certsv1.PodCertificateRequestConditionTypeDenied, denial.Reason, denial.Message)
	}
	if err != nil {
		return ctrl.Result{}, err
	}

	tmpl, err := r.Profile.Template(ctx, &req, pod)
	var pending *Pending
	switch {
	case errors.As(err, &denial):
		return ctrl.Result{}, r.finish(ctx, &req, pod, certsv1.PodCertificateRequestConditionTypeDenied, denial.Reason, denial.Message)
	case errors.As(err, &pending):
		return r.wait(ctx, &req, pod, pending)
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("building the certificate template: %w", err)
	}

	pool, err := r.Pools.Pool(r.Signer)
	if err != nil {
		// Never a reason to deny: the pool appears once the leader made it.
		log.V(1).Info("waiting for the CA pool", "reason", err.Error())
		return ctrl.Result{RequeueAfter: waitingForPoolRetry}, nil
	}
	start := r.Clock.Now()
	issued, err := signers.Sign(r.Env, pool, r.Issuer, tmpl, pub, ptrValue(req.Spec.MaxExpirationSeconds))
	if errors.Is(err, signers.ErrCAExpiring) {
		r.Recorder.Eventf(pod, &req, corev1.EventTypeWarning, ReasonCAExpiring, eventActionSign, "%s: %v", r.Signer, err)
		return ctrl.Result{RequeueAfter: caExpiringRetry}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("signing: %w", err)
	}
	if r.Metrics != nil {
		r.Metrics.SignDuration.WithLabelValues(r.Signer).Observe(r.Clock.Since(start).Seconds())
	}

	out := req.DeepCopy()
	out.Status.CertificateChain = string(issued.ChainPEM())
	out.Status.NotBefore = &metav1.Time{Time: issued.NotBefore}
	out.Status.NotAfter = &metav1.Time{Time: issued.NotAfter}
	out.Status.BeginRefreshAt = &metav1.Time{Time: issued.BeginRefreshAt}
	meta.SetStatusCondition(&out.Status.Conditions, metav1.Condition{
		Type:    certsv1.PodCertificateRequestConditionTypeIssued,
		Status:  metav1.ConditionTrue,
		Reason:  ReasonIssued,
		Message: fmt.Sprintf("issued by %s, valid until %s", r.Signer, issued.NotAfter.UTC().Format(time.RFC3339)),
	})
	if err := r.writeStatus(ctx, out); err != nil {
		return ctrl.Result{}, ignoreGone(err)
	}
	if r.Metrics != nil {
		r.Metrics.Issued.WithLabelValues(r.Signer).Inc()
		r.Metrics.Latency.WithLabelValues(r.Signer).Observe(r.Clock.Since(req.CreationTimestamp.Time).Seconds())
	}
	log.V(1).Info("issued", "notAfter", issued.NotAfter)
	return ctrl.Result{}, nil
}

// check validates what every signer checks: annotations, the key and the
// pod. It returns a *Denial only for what can never succeed.
func (r *Reconciler) check(ctx context.Context, req *certsv1.PodCertificateRequest) (*corev1.Pod, any, error) {
	var pod corev1.Pod
	podKey := client.ObjectKey{Namespace: req.Namespace, Name: req.Spec.PodName}
	if err := r.Client.Get(ctx, podKey, &pod); err != nil && !apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("reading pod %s: %w", podKey, err)
	}
	if pod.UID != req.Spec.PodUID || mismatch(req, &pod) != "" {
		// The cache may not have seen the pod yet, may still hold an older
		// pod of that name, or a copy from before it was bound to its node:
		// only a live read may deny.
		if err := r.APIReader.Get(ctx, podKey, &pod); apierrors.IsNotFound(err) {
			return nil, nil, &Denial{Reason: ReasonPodUIDMismatch, Message: fmt.Sprintf("pod %s does not exist", podKey)}
		} else if err != nil {
			return nil, nil, fmt.Errorf("reading pod %s: %w", podKey, err)
		}
		if pod.UID != req.Spec.PodUID {
			return &pod, nil, &Denial{Reason: ReasonPodUIDMismatch, Message: fmt.Sprintf("spec.podUID %s does not match pod %s (UID %s)", req.Spec.PodUID, podKey, pod.UID)}
		}
		// NodeRestriction vouches for these fields only when a node made
		// the request; anyone else allowed to create requests could claim
		// another service account for a real pod.
		if m := mismatch(req, &pod); m != "" {
			return &pod, nil, &Denial{Reason: ReasonPodMismatch, Message: m}
		}
	}
	if unknown := unknownKeys(req.Spec.UnverifiedUserAnnotations, r.Profile.UserAnnotations()); len(unknown) > 0 {
		msg := fmt.Sprintf("%s does not understand the user annotations %s", r.Signer, FirstFew(unknown, maxListed))
		if known := r.Profile.UserAnnotations(); len(known) > 0 {
			msg += "; it understands " + strings.Join(known, ", ")
		}
		return &pod, nil, &Denial{Reason: certsv1.PodCertificateRequestConditionInvalidUserConfig, Message: msg}
	}
	pub, err := signers.PublicKeyFromCSR(req.Spec.StubPKCS10Request)
	if err != nil {
		return &pod, nil, &Denial{Reason: ReasonInvalidStubCSR, Message: err.Error()}
	}
	if _, err := r.Keys.Check(pub); err != nil {
		return &pod, nil, &Denial{Reason: certsv1.PodCertificateRequestConditionUnsupportedKeyType, Message: err.Error()}
	}
	return &pod, pub, nil
}

// mismatch says how the request's service account or node differ from its
// pod's, or "" when they agree.
func mismatch(req *certsv1.PodCertificateRequest, pod *corev1.Pod) string {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	switch {
	case req.Spec.ServiceAccountName != sa:
		return fmt.Sprintf("spec.serviceAccountName %q is not the service account of pod %s/%s (%q)", req.Spec.ServiceAccountName, pod.Namespace, pod.Name, sa)
	case string(req.Spec.NodeName) != pod.Spec.NodeName:
		return fmt.Sprintf("spec.nodeName %q is not the node of pod %s/%s (%q)", req.Spec.NodeName, pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	return ""
}

// wait leaves a request pending with an Event on its pod, and fails it
// once it has waited PendingTimeout.
func (r *Reconciler) wait(ctx context.Context, req *certsv1.PodCertificateRequest, pod *corev1.Pod, p *Pending) (ctrl.Result, error) {
	age := r.Clock.Since(req.CreationTimestamp.Time)
	if age >= r.PendingTimeout {
		return ctrl.Result{}, r.finish(ctx, req, pod, certsv1.PodCertificateRequestConditionTypeFailed, p.Reason,
			fmt.Sprintf("%s (waited %s)", p.Message, r.PendingTimeout))
	}
	r.Recorder.Eventf(pod, req, corev1.EventTypeNormal, p.Reason, eventActionWaitForService, "%s", Shorten(p.Message, MaxMessage))
	retry := p.RetryAfter
	if retry == 0 {
		retry = defaultPendingRetry
	}
	return ctrl.Result{RequeueAfter: min(retry, r.PendingTimeout-age)}, nil
}

// finish writes a Denied or Failed condition, with a Warning Event on the
// pod saying why. Messages are shortened to what the apiserver accepts:
// they may quote the pod's user annotations.
func (r *Reconciler) finish(ctx context.Context, req *certsv1.PodCertificateRequest, pod *corev1.Pod, condType, reason, message string) error {
	message = Shorten(message, MaxMessage)
	out := req.DeepCopy()
	meta.SetStatusCondition(&out.Status.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue, Reason: reason, Message: message})
	if err := r.writeStatus(ctx, out); err != nil {
		return ignoreGone(err)
	}
	ctrl.LoggerFrom(ctx).Info("request "+strings.ToLower(condType), "reason", reason, "message", message)
	if pod != nil && pod.UID != "" {
		note := fmt.Sprintf("%s %s: %s", r.Signer, strings.ToLower(condType), message)
		r.Recorder.Eventf(pod, req, corev1.EventTypeWarning, reason, eventActionSign, "%s", Shorten(note, MaxMessage))
	}
	if r.Metrics != nil {
		vec := r.Metrics.Denied
		if condType == certsv1.PodCertificateRequestConditionTypeFailed {
			vec = r.Metrics.Failed
		}
		vec.WithLabelValues(r.Signer, reason).Inc()
	}
	return nil
}

// EnqueuePending maps an event to the requests that are not terminal yet,
// for changes that may unblock them (a CA pool loaded, a Service created).
// With sameNamespace, only the requests in the event object's namespace.
func EnqueuePending(requests client.Reader, sameNamespace bool) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var opts []client.ListOption
		if sameNamespace {
			opts = append(opts, client.InNamespace(obj.GetNamespace()))
		}
		var list certsv1.PodCertificateRequestList
		if err := requests.List(ctx, &list, opts...); err != nil {
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if !Terminal(&list.Items[i]) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	})
}

// statusWriteTimeout bounds a status write that outlives its reconcile.
const statusWriteTimeout = 10 * time.Second

// writeStatus writes a request's status even when the agent is stopping:
// a decision already made is better delivered, and known, than abandoned
// mid-flight with its outcome unknown. The apiserver freezes the status
// once set, so a write that lands late can never issue twice.
func (r *Reconciler) writeStatus(ctx context.Context, req *certsv1.PodCertificateRequest) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusWriteTimeout)
	defer cancel()
	return r.Client.Status().Update(ctx, req, client.FieldOwner(FieldManager))
}

// ignoreGone drops errors after which there is nothing left to do here:
// the request was deleted, or another writer changed it first (a conflict
// re-queues through the watch event that follows).
func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("writing request status: %w", err)
}

func unknownKeys(m map[string]string, known []string) []string {
	var out []string
	for k := range m {
		if !slices.Contains(known, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// startedWithCaches puts a cache in the manager's cache group. A bare
// cache.Cache would land in the leader-election group: started only once
// this replica leads, after the manager's own caches have synced.
type startedWithCaches struct{ cache.Cache }

// GetCache is what the manager looks for to put a runnable among its caches.
func (c startedWithCaches) GetCache() cache.Cache { return c.Cache }

// noWait starts a source without waiting for its handler to have replayed
// the cache's initial list. The request cache is synced before any
// controller starts (startedWithCaches), so there is nothing to wait for,
// and client-go checks a handler's sync only every 100 ms, which would hold
// every worker back that long on each start and each failover. The
// requests arrive in the queue as they are replayed. Kind still logs a
// failure to get its informer, and retries.
type noWait struct{ source.Source }
