package trustdomains

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

func TestPollInterval(t *testing.T) {
	r := &Reconciler{}
	td := spiffeid.RequireTrustDomainFromString("x.example")
	for _, tc := range []struct {
		hint time.Duration // 0: none
		want time.Duration
	}{
		{0, 75 * time.Second},               // SPIRE's default 5 min hint / 4
		{5 * time.Second, 15 * time.Second}, // floored at 1 min
		{10 * time.Minute, 150 * time.Second},
		{48 * time.Hour, 15 * time.Minute}, // ceiling 1 h
		{-time.Second, 75 * time.Second},   // an overflowed hint counts as none
	} {
		b := spiffebundle.New(td)
		if tc.hint != 0 {
			b.SetRefreshHint(tc.hint)
		}
		if got := r.pollInterval(b); got != tc.want {
			t.Errorf("hint %v: poll every %v, want %v", tc.hint, got, tc.want)
		}
	}
	if got := r.pollInterval(nil); got != 75*time.Second {
		t.Errorf("no bundle: poll every %v, want 75s", got)
	}
}

func TestRetryBackoff(t *testing.T) {
	r := &Reconciler{}
	td := &hubv1alpha1.TrustDomain{ObjectMeta: metav1.ObjectMeta{UID: "u"}, Spec: hubv1alpha1.TrustDomainSpec{TrustDomain: "x.example"}}
	var got []time.Duration
	for range 6 {
		got = append(got, r.retryAfter(td))
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 75 * time.Second, 75 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff = %v, want %v", got, want)
		}
	}
	r.forget(td.Name)
	if d := r.retryAfter(td); d != 5*time.Second {
		t.Fatalf("after a success the backoff restarts at %v, want 5s", d)
	}
}

func newFake(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	if err := hubv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&hubv1alpha1.TrustDomain{}).WithObjects(objs...).Build()
}

func TestInvalidSpecIsNotPolled(t *testing.T) {
	td := &hubv1alpha1.TrustDomain{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Generation: 1},
		Spec: hubv1alpha1.TrustDomainSpec{
			TrustDomain:    "x.example",
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: "http://x.example/", Profile: hubv1alpha1.ProfileHTTPSWeb},
		},
	}
	c := newFake(t, td)
	rec := &recorder{}
	r := &Reconciler{Client: c, Recorder: rec, Clock: clocktesting.NewFakePassiveClock(time.Unix(1e9, 0)),
		Fetch: func(context.Context, spiffeid.TrustDomain, string, ...federation.FetchOption) (*spiffebundle.Bundle, error) {
			t.Fatal("an invalid spec was polled")
			return nil, nil
		}}
	res, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: "bad"}})
	if err != nil || res.RequeueAfter != 0 {
		t.Fatalf("Reconcile = %+v, %v; want no requeue", res, err)
	}
	var got hubv1alpha1.TrustDomain
	if err := c.Get(context.Background(), client.ObjectKey{Name: "bad"}, &got); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(got.Status.Conditions, hubv1alpha1.ConditionReady)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != hubv1alpha1.ReasonInvalidSpec {
		t.Fatalf("Ready = %+v, want False/InvalidSpec", cond)
	}
	if !rec.has("bad", "Warning", hubv1alpha1.ReasonInvalidSpec) {
		t.Fatalf("no Warning Event: %q", rec.events)
	}
}

func TestUnchangedBundleWritesNothing(t *testing.T) {
	trustDomain := spiffeid.RequireTrustDomainFromString("x.example")
	ca := newCA(t, "x.example")
	b := spiffebundle.FromX509Authorities(trustDomain, nil)
	b.AddX509Authority(ca.Certificate)
	b.SetSequenceNumber(4)
	b.SetRefreshHint(time.Minute)
	fetchErr := error(nil)
	td := &hubv1alpha1.TrustDomain{
		ObjectMeta: metav1.ObjectMeta{Name: "td", Generation: 1},
		Spec: hubv1alpha1.TrustDomainSpec{
			TrustDomain:    "x.example",
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: "https://x.example/", Profile: hubv1alpha1.ProfileHTTPSWeb},
		},
	}
	c := newFake(t, td)
	clk := clocktesting.NewFakePassiveClock(time.Unix(1e9, 0))
	r := &Reconciler{Client: c, Recorder: &recorder{}, Clock: clk,
		Fetch: func(context.Context, spiffeid.TrustDomain, string, ...federation.FetchOption) (*spiffebundle.Bundle, error) {
			return b.Clone(), fetchErr
		}}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Name: "td"}}
	get := func() *hubv1alpha1.TrustDomain {
		var got hubv1alpha1.TrustDomain
		if err := c.Get(context.Background(), req.NamespacedName, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	res, err := r.Reconcile(context.Background(), req)
	if err != nil || res.RequeueAfter != 15*time.Second {
		t.Fatalf("Reconcile = %+v, %v; want a poll in 15s (1 min hint / 4)", res, err)
	}
	first := get()
	clk.SetTime(clk.Now().Add(time.Hour))
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if second := get(); second.ResourceVersion != first.ResourceVersion {
		t.Fatalf("an unchanged bundle was written again: %+v", second.Status)
	}

	// A failure keeps the bundle and stamps the time.
	fetchErr = &url.Error{Op: "Get", URL: "https://x.example/", Err: errors.New("connection refused")}
	res, err = r.Reconcile(context.Background(), req)
	if err != nil || res.RequeueAfter != 5*time.Second {
		t.Fatalf("Reconcile = %+v, %v; want a retry in 5s", res, err)
	}
	failed := get()
	if failed.Status.Bundle != first.Status.Bundle || failed.Status.LastFetchTime.Time.Unix() != clk.Now().Unix() || failed.Status.LastFetchError == "" {
		t.Fatalf("after a failure: %+v", failed.Status)
	}
	if c := meta.FindStatusCondition(failed.Status.Conditions, hubv1alpha1.ConditionReady); c.Reason != hubv1alpha1.ReasonFetchFailed {
		t.Fatalf("Ready reason %q, want FetchFailed", c.Reason)
	}
}

// A deleted TrustDomain's failure count is forgotten; a re-created one
// starts its backoff again.
func TestFailuresForgottenOnDelete(t *testing.T) {
	r := &Reconciler{Client: newFake(t)}
	td := &hubv1alpha1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: "gone", UID: "u1"}, Spec: hubv1alpha1.TrustDomainSpec{TrustDomain: "x.example"}}
	r.retryAfter(td)
	r.retryAfter(td)
	if d := r.retryAfter(&hubv1alpha1.TrustDomain{ObjectMeta: metav1.ObjectMeta{Name: "gone", UID: "u2"}, Spec: td.Spec}); d != 5*time.Second {
		t.Errorf("a re-created TrustDomain backs off %v, want 5s", d)
	}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	if len(r.failures) != 0 {
		t.Errorf("failures of a deleted TrustDomain kept: %v", r.failures)
	}
}

// A bundle stored for another trust domain (before spec.trustDomain was
// immutable) is never kept as the last good bundle, and a fetch records
// whose bundle it stored. A bundle stored by an older hub (no
// bundleTrustDomain) is kept only if it passes the checks of a fetched
// one, and is then recorded as this trust domain's.
func TestForeignBundleIsNotKept(t *testing.T) {
	for _, tc := range []struct {
		name, authority, fetchedFor string
		kept                        bool
	}{
		{"fetched for another trust domain", "old.example", "old.example", false},
		{"stored by an older hub, another trust domain's", "old.example", "", false},
		{"stored by an older hub, this trust domain's", "x.example", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testStoredBundle(t, tc.authority, tc.fetchedFor, tc.kept)
		})
	}
}

func testStoredBundle(t *testing.T, authority, fetchedFor string, kept bool) {
	stored := bundleOf(spiffeid.RequireTrustDomainFromString(authority).Name(), 7, time.Minute, newCA(t, authority))
	doc, err := stored.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	td := &hubv1alpha1.TrustDomain{
		ObjectMeta: metav1.ObjectMeta{Name: "td", Generation: 2},
		Spec: hubv1alpha1.TrustDomainSpec{
			TrustDomain:    "x.example",
			BundleEndpoint: hubv1alpha1.BundleEndpoint{URL: "https://x.example/", Profile: hubv1alpha1.ProfileHTTPSWeb},
		},
		Status: hubv1alpha1.TrustDomainStatus{Bundle: string(doc), BundleTrustDomain: fetchedFor, SequenceNumber: 7, RefreshHint: 60},
	}
	c := newFake(t, td)
	good := bundleOf("x.example", 1, time.Minute, newCA(t, "x.example"))
	fetchErr := error(&url.Error{Op: "Get", URL: "https://x.example/", Err: errors.New("connection refused")})
	r := &Reconciler{Client: c, Recorder: &recorder{}, Clock: clocktesting.NewFakePassiveClock(time.Unix(1e9, 0)),
		Fetch: func(context.Context, spiffeid.TrustDomain, string, ...federation.FetchOption) (*spiffebundle.Bundle, error) {
			if fetchErr != nil {
				return nil, fetchErr
			}
			return good.Clone(), nil
		}}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Name: "td"}}
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var got hubv1alpha1.TrustDomain
	if err := c.Get(context.Background(), req.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(got.Status.Conditions, hubv1alpha1.ConditionReady)
	if kept {
		if got.Status.Bundle != string(doc) || got.Status.BundleTrustDomain != "x.example" || cond == nil || !strings.Contains(cond.Message, "keeping") {
			t.Fatalf("after a failure, the stored bundle of x.example is not kept and recorded: %+v", got.Status)
		}
		return
	}
	if got.Status.Bundle != "" || got.Status.BundleTrustDomain != "" || got.Status.SequenceNumber != 0 {
		t.Errorf("after a failure, old.example's bundle is kept: %+v", got.Status)
	}
	if cond == nil || strings.Contains(cond.Message, "keeping") {
		t.Errorf("Ready = %+v; want no claim of a kept bundle", cond)
	}

	fetchErr = nil
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), req.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.BundleTrustDomain != "x.example" || got.CurrentBundle() == "" {
		t.Errorf("after a fetch: bundleTrustDomain %q, bundle %q", got.Status.BundleTrustDomain, got.Status.Bundle)
	}
}
