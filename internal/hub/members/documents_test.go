package members

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

// Reports rewrite lastReportTime and Ready every interval; only changes to
// what is served may rebuild the documents.
func TestServedChanged(t *testing.T) {
	base := &hubv1.MemberCluster{
		Spec: hubv1.MemberClusterSpec{Issuer: "https://hub.example/clusters/east", TrustDomain: "east.example"},
		Status: hubv1.MemberClusterStatus{JWKS: `{"keys":[]}`, AnchorsSequence: 1,
			Anchors: []hubv1.SignerAnchors{{Signer: "anchorage.dev/spiffe", PEM: "a"}}},
	}
	meta.SetStatusCondition(&base.Status.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: "Joined"})
	for _, tc := range []struct {
		name   string
		change func(*hubv1.MemberCluster)
		want   bool
	}{
		{"a report: lastReportTime and agent version", func(m *hubv1.MemberCluster) {
			m.Status.LastReportTime = &metav1.Time{Time: time.Now()}
			m.Status.AgentVersion = "v2"
		}, false},
		{"Ready flips", func(m *hubv1.MemberCluster) {
			meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "ReportStale"})
		}, false},
		{"anchors", func(m *hubv1.MemberCluster) { m.Status.Anchors[0].PEM = "b"; m.Status.AnchorsSequence = 2 }, true},
		{"JWKS rotated", func(m *hubv1.MemberCluster) { m.Status.JWKS = `{"keys":[{}]}` }, true},
		{"joined", func(m *hubv1.MemberCluster) { m.Status.Conditions = nil }, true},
		{"spec", func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*"} }, true},
	} {
		cur := base.DeepCopy()
		tc.change(cur)
		if got := servedChanged(base, cur); got != tc.want {
			t.Errorf("%s: servedChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}
