package members

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	"github.com/anchorage-dev/anchorage/internal/hub/api"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

// StatusReconciler keeps a MemberCluster's join token and its Joined and
// Ready conditions.
type StatusReconciler struct {
	Client client.Client
	// APIReader reads past the cache (mgr.GetAPIReader(), the default):
	// before a new join token, whether the member has joined after all.
	APIReader client.Reader
	Namespace string
	Clock     clock.PassiveClock
	Recorder  events.EventRecorder
	// TokenTTL is how long a join token is valid (DESIGN.md: 24h).
	TokenTTL time.Duration
	// ReportLease: a member that has not reported for this long, or not
	// applied its current bundle set for this long, is not Ready (like
	// OCM's lease).
	ReportLease time.Duration
	// HubURL, when set, is checked against each member's issuer, which
	// must be <HubURL>/clusters/<name> for the hub to serve it.
	HubURL string
	// Sets tells the member's current bundle-set sequence; nil skips the
	// applied check.
	Sets interface {
		Current(member string) (SequenceEntry, bool)
	}
}

// SetupWithManager watches MemberClusters and their join Secrets.
func (r *StatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("membercluster-status").
		For(&hubv1.MemberCluster{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &hubv1.MemberCluster{})).
		Complete(r)
}

// Reconcile converges one member.
func (r *StatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var mc hubv1.MemberCluster
	if err := r.Client.Get(ctx, req.NamespacedName, &mc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := r.Clock.Now()
	st := mc.Status.DeepCopy()
	var requeue time.Duration

	joined := meta.IsStatusConditionTrue(st.Conditions, hubv1.ConditionJoined)
	secretKey := client.ObjectKey{Namespace: r.Namespace, Name: api.JoinTokenSecretName(mc.Name)}
	var secret corev1.Secret
	err := r.Client.Get(ctx, secretKey, &secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("reading join token Secret: %w", err)
	}
	exists := err == nil
	switch {
	case joined && exists:
		// Spent: the join handler deletes it; this catches a failed delete.
		if err := r.Client.Delete(ctx, &secret); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("deleting the spent join token: %w", err)
		}
	case !joined && !exists:
		// The join handler sets Joined, then deletes the token: a cache
		// that has seen the delete but not the join must not hand out a
		// second token.
		if ok, err := r.mayCreateToken(ctx, mc.Name); err != nil || !ok {
			return ctrl.Result{}, err // the MemberCluster's update event brings it back
		}
		if err := r.createToken(ctx, &mc, now); err != nil {
			r.Recorder.Eventf(&mc, nil, corev1.EventTypeWarning, "JoinTokenFailed", "CreateJoinToken", "creating the join token: %v", err)
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(&mc, nil, corev1.EventTypeNormal, "JoinTokenCreated", "CreateJoinToken", "join token for the agent in Secret %s (expires in %s)", secretKey, r.TokenTTL)
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionFalse, Reason: hubv1.ReasonAwaitingJoin,
			Message: fmt.Sprintf("waiting for the agent to join with the token in Secret %s", secretKey)})
		requeue = r.TokenTTL
	case !joined && exists:
		exp, perr := time.Parse(time.RFC3339, secret.Annotations[api.ExpiresAtAnnotation])
		if perr != nil || !now.Before(exp) {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionFalse, Reason: hubv1.ReasonJoinTokenExpired,
				Message: fmt.Sprintf("the join token in Secret %s expired; delete the Secret for a new one", secretKey)})
		} else {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionFalse, Reason: hubv1.ReasonAwaitingJoin,
				Message: fmt.Sprintf("waiting for the agent to join with the token in Secret %s", secretKey)})
			requeue = exp.Sub(now) + time.Second
		}
	}

	wantIssuer := strings.TrimSuffix(r.HubURL, "/") + "/clusters/" + mc.Name
	switch {
	case r.HubURL != "" && mc.Spec.Issuer != wantIssuer:
		// The hub serves a member's documents only under its own URL; the
		// agent would get "unknown cluster" on every call.
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonInvalidSpec,
			Message: fmt.Sprintf("spec.issuer is %q, but this hub serves member %s at %q: re-create the MemberCluster with that issuer and set the member apiserver's --service-account-issuer to it", mc.Spec.Issuer, mc.Name, wantIssuer)})
	case !joined:
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonNotJoined, Message: "the agent has not joined"})
	case st.LastReportTime == nil:
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonReportStale, Message: "joined; waiting for the agent's first report"})
	default:
		if stale := st.LastReportTime.Add(r.ReportLease); !now.Before(stale) {
			if meta.IsStatusConditionTrue(st.Conditions, hubv1.ConditionReady) {
				r.Recorder.Eventf(&mc, nil, corev1.EventTypeWarning, hubv1.ReasonReportStale, "CheckLease", "no report from the agent since %s", st.LastReportTime.UTC().Format(time.RFC3339))
			}
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonReportStale,
				Message: fmt.Sprintf("no report from the agent since %s (lease %s); its bundles stay served", st.LastReportTime.UTC().Format(time.RFC3339), r.ReportLease)})
		} else {
			if requeue == 0 || stale.Sub(now) < requeue {
				requeue = stale.Sub(now) + time.Second
			}
			// No time in the message: a report must not rewrite the condition.
			ready := metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionTrue, Reason: hubv1.ReasonReporting,
				Message: "the agent reports and has applied its current bundle set"}
			if r.Sets != nil {
				if cur, ok := r.Sets.Current(mc.Name); ok && st.AppliedBundleSequence < cur.Sequence {
					if late := cur.Since.Add(r.ReportLease); !now.Before(late) {
						ready = metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonBundleSetPending,
							Message: fmt.Sprintf("the agent has not applied bundle set %d (assigned %s); it last applied %d. Its log and the anchorage_agent_hub_poll_failures_total metric say why",
								cur.Sequence, cur.Since.UTC().Format(time.RFC3339), st.AppliedBundleSequence)}
					} else if d := late.Sub(now) + time.Second; d < requeue {
						requeue = d
					}
				}
			}
			meta.SetStatusCondition(&st.Conditions, ready)
		}
	}
	st.ObservedGeneration = mc.Generation
	if !equality.Semantic.DeepEqual(st, &mc.Status) {
		mc.Status = *st
		if err := r.Client.Status().Update(ctx, &mc, client.FieldOwner(api.FieldManager)); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// mayCreateToken reads the member from the apiserver: a token is for a
// member that exists and has not joined.
func (r *StatusReconciler) mayCreateToken(ctx context.Context, name string) (bool, error) {
	if r.APIReader == nil {
		return true, nil
	}
	var live hubv1.MemberCluster
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: name}, &live); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading MemberCluster %s: %w", name, err)
	}
	return live.DeletionTimestamp.IsZero() && !meta.IsStatusConditionTrue(live.Status.Conditions, hubv1.ConditionJoined), nil
}

func (r *StatusReconciler) createToken(ctx context.Context, mc *hubv1.MemberCluster, now time.Time) error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   r.Namespace,
			Name:        api.JoinTokenSecretName(mc.Name),
			Labels:      map[string]string{api.ClusterLabel: mc.Name},
			Annotations: map[string]string{api.ExpiresAtAnnotation: now.Add(r.TokenTTL).UTC().Format(time.RFC3339)},
		},
		Type: "hub.anchorage.dev/join-token",
		Data: map[string][]byte{api.TokenKey: []byte(base64.RawURLEncoding.EncodeToString(raw))},
	}
	// Deleting the MemberCluster deletes its token.
	if err := controllerutil.SetControllerReference(mc, s, r.Client.Scheme()); err != nil {
		return err
	}
	if err := r.Client.Create(ctx, s, client.FieldOwner(api.FieldManager)); client.IgnoreAlreadyExists(err) != nil {
		return fmt.Errorf("creating Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}
