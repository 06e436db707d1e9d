package v1alpha1_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

func fullMember() *hubv1.MemberCluster {
	now := metav1.NewTime(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	return &hubv1.MemberCluster{
		TypeMeta:   metav1.TypeMeta{APIVersion: hubv1.GroupVersion.String(), Kind: "MemberCluster"},
		ObjectMeta: metav1.ObjectMeta{Name: "east", Labels: map[string]string{"a": "b"}},
		Spec: hubv1.MemberClusterSpec{
			Issuer:              "https://hub.example.org/clusters/east",
			TrustDomain:         "east.example.org",
			AgentServiceAccount: "anchorage-system/member-agent",
			FederatesWith:       []string{"west.example.org", "*"},
			ClusterSet:          ptr.To(true),
		},
		Status: hubv1.MemberClusterStatus{
			Conditions: []metav1.Condition{{
				Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined,
				Message: "joined", LastTransitionTime: now, ObservedGeneration: 1,
			}},
			LastReportTime:        &now,
			Anchors:               []hubv1.SignerAnchors{{Signer: "anchorage.dev/spiffe", PEM: "pem"}},
			JWKS:                  `{"keys":[]}`,
			AgentVersion:          "v0.1.0",
			AppliedBundleSequence: 4,
			ObservedGeneration:    1,
		},
	}
}

func fullTrustDomain() *hubv1.TrustDomain {
	now := metav1.NewTime(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	return &hubv1.TrustDomain{
		TypeMeta:   metav1.TypeMeta{APIVersion: hubv1.GroupVersion.String(), Kind: "TrustDomain"},
		ObjectMeta: metav1.ObjectMeta{Name: "spire"},
		Spec: hubv1.TrustDomainSpec{
			TrustDomain: "spire.example.org",
			BundleEndpoint: hubv1.BundleEndpoint{
				URL:              "https://spire.example.org:8443",
				Profile:          hubv1.ProfileHTTPSSPIFFE,
				EndpointSPIFFEID: "spiffe://spire.example.org/spire/server",
			},
			BootstrapBundle: `{"keys":[]}`,
		},
		Status: hubv1.TrustDomainStatus{
			Conditions:         []metav1.Condition{{Type: hubv1.ConditionReady, Status: metav1.ConditionTrue, Reason: hubv1.ReasonBundleFetched, LastTransitionTime: now}},
			Bundle:             `{"keys":[]}`,
			BundleTrustDomain:  "spire.example.org",
			SequenceNumber:     2,
			RefreshHint:        300,
			LastFetchTime:      &now,
			LastFetchError:     "",
			ObservedGeneration: 1,
		},
	}
}

func TestDeepCopy(t *testing.T) {
	m := fullMember()
	if err := m.Validate(); err != nil {
		t.Fatalf("the test object is invalid: %v", err)
	}
	c := m.DeepCopy()
	if !reflect.DeepEqual(m, c) {
		t.Fatalf("DeepCopy differs:\n%+v\n%+v", m, c)
	}
	// No memory shared: changing the copy leaves the original alone.
	c.Spec.FederatesWith[0] = "changed"
	*c.Spec.ClusterSet = false
	c.Status.Conditions[0].Reason = "Changed"
	c.Status.Anchors[0].PEM = "changed"
	c.Status.LastReportTime.Time = time.Time{}
	c.Labels["a"] = "changed"
	if !reflect.DeepEqual(m, fullMember()) {
		t.Errorf("changing the copy changed the original:\n%+v", m)
	}
	obj := m.DeepCopyObject()
	if got, ok := obj.(*hubv1.MemberCluster); !ok || !reflect.DeepEqual(got, m) {
		t.Errorf("DeepCopyObject() = %#v", obj)
	}

	td := fullTrustDomain()
	if err := td.Validate(); err != nil {
		t.Fatalf("the test object is invalid: %v", err)
	}
	tc := td.DeepCopy()
	if !reflect.DeepEqual(td, tc) {
		t.Fatalf("DeepCopy differs")
	}
	tc.Status.Conditions[0].Status = metav1.ConditionFalse
	tc.Status.LastFetchTime.Time = time.Time{}
	if !reflect.DeepEqual(td, fullTrustDomain()) {
		t.Errorf("changing the copy changed the original:\n%+v", td)
	}

	list := &hubv1.MemberClusterList{Items: []hubv1.MemberCluster{*fullMember()}}
	lc := list.DeepCopyObject().(*hubv1.MemberClusterList)
	lc.Items[0].Spec.FederatesWith[0] = "changed"
	if list.Items[0].Spec.FederatesWith[0] != "west.example.org" {
		t.Errorf("list copy shares items")
	}
	tl := &hubv1.TrustDomainList{Items: []hubv1.TrustDomain{*fullTrustDomain()}}
	if !reflect.DeepEqual(tl, tl.DeepCopyObject()) {
		t.Errorf("TrustDomainList DeepCopyObject differs")
	}
	var nilMember *hubv1.MemberCluster
	if nilMember.DeepCopy() != nil {
		t.Errorf("DeepCopy of nil is not nil")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, obj := range []runtime.Object{fullMember(), fullTrustDomain()} {
		raw, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		back := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(runtime.Object)
		if err := json.Unmarshal(raw, back); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(obj, back) {
			t.Errorf("%T after a JSON round trip:\n%s", obj, raw)
		}
	}
	// Field names are the documented ones.
	raw, _ := json.Marshal(fullMember())
	for _, name := range []string{`"issuer"`, `"trustDomain"`, `"agentServiceAccount"`, `"federatesWith"`, `"clusterSet"`,
		`"lastReportTime"`, `"anchors"`, `"signer"`, `"pem"`, `"jwks"`, `"agentVersion"`, `"appliedBundleSequence"`, `"observedGeneration"`} {
		if !strings.Contains(string(raw), name) {
			t.Errorf("MemberCluster JSON has no %s: %s", name, raw)
		}
	}
	raw, _ = json.Marshal(fullTrustDomain())
	for _, name := range []string{`"bundleEndpoint"`, `"url"`, `"profile"`, `"endpointSPIFFEID"`, `"bootstrapBundle"`,
		`"bundle"`, `"sequenceNumber"`, `"refreshHint"`, `"lastFetchTime"`} {
		if !strings.Contains(string(raw), name) {
			t.Errorf("TrustDomain JSON has no %s: %s", name, raw)
		}
	}
}

func TestScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := hubv1.Install(s); err != nil {
		t.Fatal(err)
	}
	for kind, obj := range map[string]runtime.Object{
		"MemberCluster": &hubv1.MemberCluster{}, "MemberClusterList": &hubv1.MemberClusterList{},
		"TrustDomain": &hubv1.TrustDomain{}, "TrustDomainList": &hubv1.TrustDomainList{},
	} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil || len(gvks) != 1 || gvks[0] != hubv1.GroupVersion.WithKind(kind) {
			t.Errorf("ObjectKinds(%T) = %v, %v", obj, gvks, err)
		}
	}
	if got := hubv1.Resource("memberclusters").String(); got != "memberclusters.hub.anchorage.dev" {
		t.Errorf("Resource() = %s", got)
	}
}

func TestParseAgentServiceAccount(t *testing.T) {
	ns, name, err := hubv1.ParseAgentServiceAccount("kube-system/agent.v2")
	if err != nil || ns != "kube-system" || name != "agent.v2" {
		t.Errorf("ParseAgentServiceAccount = %q, %q, %v", ns, name, err)
	}
	if _, _, err := hubv1.ParseAgentServiceAccount(""); err == nil {
		t.Errorf("ParseAgentServiceAccount(\"\") succeeded")
	}
	var spec hubv1.MemberClusterSpec
	if ns, name, err := spec.AgentServiceAccountRef(); err != nil || ns != "anchorage-system" || name != "member-agent" {
		t.Errorf("AgentServiceAccountRef() of an empty spec = %q, %q, %v", ns, name, err)
	}
	if !spec.InClusterSet() {
		t.Errorf("InClusterSet() of an empty spec = false, want the default true")
	}
	spec.FederatesWith = []string{"a", "*"}
	if !spec.FederatesWithAll() {
		t.Errorf("FederatesWithAll() = false with %v", spec.FederatesWith)
	}
}

func TestValidateTrustDomainName(t *testing.T) {
	for s, ok := range map[string]bool{
		"example.org": true, "a": true, "a_b-c.d": true, "1.2.3.4": true,
		"": false, "Example.org": false, "spiffe://example.org": false, "spiffe://example.org/x": false,
		"example.org.": false, ".example.org": false, "_x": false, strings.Repeat("a", 64): false, "a b": false,
	} {
		if err := hubv1.ValidateTrustDomainName(s); (err == nil) != ok {
			t.Errorf("ValidateTrustDomainName(%q) = %v, want ok=%v", s, err, ok)
		}
	}
}

// The errors name the field, the way the apiserver's do.
func TestValidateErrorsNameFields(t *testing.T) {
	m := fullMember()
	m.Name = "a.b"
	m.Spec.TrustDomain = "X"
	m.Spec.FederatesWith = []string{"w", "w"}
	err := m.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, want := range []string{"metadata.name", "spec.trustDomain", "spec.federatesWith[1]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; does not name %s", err, want)
		}
	}
	old := fullMember()
	m = fullMember()
	m.Spec.Issuer = "https://other.example.org"
	err = m.ValidateUpdate(old)
	var agg utilerrors.Aggregate
	if !errors.As(err, &agg) || len(agg.Errors()) != 1 {
		t.Fatalf("ValidateUpdate() = %v, want one error", err)
	}
	if fe, ok := agg.Errors()[0].(*field.Error); !ok || fe.Field != "spec.issuer" {
		t.Errorf("ValidateUpdate() error = %#v, want a *field.Error on spec.issuer", agg.Errors()[0])
	}
}

// A stored bundle is this trust domain's when it was fetched for it, or
// when it predates bundleTrustDomain (an upgrade must not drop it); never
// when it was fetched for another.
func TestCurrentBundle(t *testing.T) {
	for _, tc := range []struct {
		name, fetchedFor, want string
	}{
		{"fetched for this trust domain", "spire.example", "doc"},
		{"stored by an older hub", "", "doc"},
		{"fetched for another trust domain", "old.example", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := hubv1.TrustDomain{Spec: hubv1.TrustDomainSpec{TrustDomain: "spire.example"},
				Status: hubv1.TrustDomainStatus{Bundle: "doc", BundleTrustDomain: tc.fetchedFor}}
			if got := td.CurrentBundle(); got != tc.want {
				t.Errorf("CurrentBundle() = %q, want %q", got, tc.want)
			}
		})
	}
}
