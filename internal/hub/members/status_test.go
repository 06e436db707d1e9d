package members

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

type fixedSets map[string]SequenceEntry

func (f fixedSets) Current(m string) (SequenceEntry, bool) { e, ok := f[m]; return e, ok }

// Ready weighs the applied bundle set: a member that reports but has not
// applied its current set within a report lease is not Ready; before the
// lease runs out it stays Ready and is looked at again when it does.
func TestReadyWaitsForTheAppliedBundleSet(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := hubv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		applied     int64
		since       time.Duration // before now
		wantReady   metav1.ConditionStatus
		wantReason  string
		wantRequeue time.Duration // at most
	}{
		{"applied", 3, 10 * time.Minute, metav1.ConditionTrue, hubv1.ReasonReporting, 2*time.Minute + time.Second},
		{"not applied, within the lease", 2, 30 * time.Second, metav1.ConditionTrue, hubv1.ReasonReporting, 91 * time.Second},
		{"not applied for a whole lease", 2, 3 * time.Minute, metav1.ConditionFalse, hubv1.ReasonBundleSetPending, 2*time.Minute + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := metav1.NewTime(now)
			mc := &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: "east"}, Spec: hubv1.MemberClusterSpec{Issuer: "https://hub.example/clusters/east", TrustDomain: "east.example"},
				Status: hubv1.MemberClusterStatus{LastReportTime: &report, AppliedBundleSequence: tc.applied,
					Conditions: []metav1.Condition{{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined, LastTransitionTime: report}}}}
			c := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&hubv1.MemberCluster{}).WithObjects(mc).Build()
			r := &StatusReconciler{Client: c, Namespace: "anchorage-hub", Clock: clocktesting.NewFakePassiveClock(now), Recorder: events.NewFakeRecorder(10),
				TokenTTL: 24 * time.Hour, ReportLease: 2 * time.Minute,
				Sets: fixedSets{"east": {Sequence: 3, Since: metav1.NewTime(now.Add(-tc.since))}}}
			res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mc)})
			if err != nil {
				t.Fatal(err)
			}
			var got hubv1.MemberCluster
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(mc), &got); err != nil {
				t.Fatal(err)
			}
			ready := meta.FindStatusCondition(got.Status.Conditions, hubv1.ConditionReady)
			if ready == nil || ready.Status != tc.wantReady || ready.Reason != tc.wantReason {
				t.Fatalf("Ready = %+v, want %s/%s", ready, tc.wantReady, tc.wantReason)
			}
			if res.RequeueAfter <= 0 || res.RequeueAfter > tc.wantRequeue {
				t.Errorf("requeue after %v, want (0, %v]", res.RequeueAfter, tc.wantRequeue)
			}
		})
	}
}

// A member whose issuer is not under this hub's URL says so, rather than
// leaving its agent with "unknown cluster" on every call.
func TestIssuerOutsideTheHub(t *testing.T) {
	s := runtime.NewScheme()
	if err := hubv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	mc := &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: "east"}, Spec: hubv1.MemberClusterSpec{Issuer: "https://elsewhere.example/clusters/east", TrustDomain: "east.example"}}
	c := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&hubv1.MemberCluster{}).WithObjects(mc).Build()
	r := &StatusReconciler{Client: c, Namespace: "anchorage-hub", Clock: clocktesting.NewFakePassiveClock(time.Now()), Recorder: events.NewFakeRecorder(10),
		TokenTTL: time.Hour, ReportLease: time.Minute, HubURL: "https://hub.example/"}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mc)}); err != nil {
		t.Fatal(err)
	}
	var got hubv1.MemberCluster
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(mc), &got); err != nil {
		t.Fatal(err)
	}
	ready := meta.FindStatusCondition(got.Status.Conditions, hubv1.ConditionReady)
	if ready == nil || ready.Reason != hubv1.ReasonInvalidSpec || !strings.Contains(ready.Message, `"https://hub.example/clusters/east"`) {
		t.Errorf("Ready = %+v, want InvalidSpec naming the issuer to use", ready)
	}
}

// A member whose join the cache has not seen yet, while it has seen the
// spent token's delete, gets no second token.
func TestNoSecondJoinTokenFromAStaleCache(t *testing.T) {
	s := hubScheme(t)
	stale := &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: "east"}, Spec: hubv1.MemberClusterSpec{Issuer: "https://hub.example/clusters/east", TrustDomain: "east.example"}}
	cached := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&hubv1.MemberCluster{}).WithObjects(stale).Build()
	live := fake.NewClientBuilder().WithScheme(s).WithObjects(joinedMember("east", "east.example")).Build()
	rec := events.NewFakeRecorder(10)
	r := &StatusReconciler{Client: cached, APIReader: live, Namespace: "anchorage-hub", Clock: clocktesting.NewFakePassiveClock(time.Now()), Recorder: rec,
		TokenTTL: time.Hour, ReportLease: time.Minute}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(stale)}); err != nil {
		t.Fatal(err)
	}
	var secrets corev1.SecretList
	if err := cached.List(context.Background(), &secrets); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Errorf("a joined member got a new join token: %s", secrets.Items[0].Name)
	}
	select {
	case e := <-rec.Events:
		t.Errorf("event %q for a member that has joined", e)
	default:
	}

	// Not joined for the apiserver either: the token is made.
	r.APIReader = cached
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(stale)}); err != nil {
		t.Fatal(err)
	}
	if err := cached.List(context.Background(), &secrets); err != nil || len(secrets.Items) != 1 {
		t.Fatalf("%d join tokens, %v; want 1", len(secrets.Items), err)
	}
}
