package v1alpha1_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1/crds"

	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's global logger, which
	// complains with a stack trace if it is never set.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// startHub starts an apiserver with the hub's CRDs and a client that knows
// the hub's types.
func startHub(t *testing.T) *localcluster.Cluster {
	t.Helper()
	scheme, err := localcluster.DefaultScheme()
	if err != nil {
		t.Fatal(err)
	}
	if err := hubv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return localcluster.StartT(t, localcluster.Options{Name: "hub", CRDs: crds.All(), Scheme: scheme})
}

// TestAPIServer runs everything that needs an apiserver on one, started once.
func TestAPIServer(t *testing.T) {
	c := startHub(t)
	t.Run("CRDsEstablished", func(t *testing.T) { testCRDsEstablished(t, c) })
	t.Run("MemberClusterDefaults", func(t *testing.T) { testMemberClusterDefaults(t, c) })
	t.Run("StatusSubresource", func(t *testing.T) { testStatusSubresource(t, c) })
	t.Run("PrinterColumns", func(t *testing.T) { testPrinterColumns(t, c) })
	t.Run("SchemaAgreement", func(t *testing.T) { testSchemaAgreement(t, c) })
}

func testCRDsEstablished(t *testing.T, c *localcluster.Cluster) {
	for _, name := range []string{"memberclusters.hub.anchorage.dev", "trustdomains.hub.anchorage.dev"} {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Client.Get(t.Context(), client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatalf("get CRD %s: %v", name, err)
		}
		established := false
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			t.Errorf("CRD %s is not established: %+v", name, crd.Status.Conditions)
		}
		if crd.Spec.Scope != apiextensionsv1.ClusterScoped {
			t.Errorf("CRD %s scope = %s, want Cluster", name, crd.Spec.Scope)
		}
	}
}

func validMember(name string) *hubv1.MemberCluster {
	return &hubv1.MemberCluster{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: hubv1.MemberClusterSpec{
			Issuer:      "https://hub.example.org/clusters/" + name,
			TrustDomain: name + ".example.org",
		},
	}
}

func testMemberClusterDefaults(t *testing.T, c *localcluster.Cluster) {
	ctx := t.Context()
	m := validMember("defaults")
	m.Spec.FederatesWith = []string{"west.example.org"}
	want := m.DeepCopy()
	want.Default()
	if err := c.Client.Create(ctx, m); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := &hubv1.MemberCluster{}
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Spec.AgentServiceAccount != hubv1.DefaultAgentServiceAccount {
		t.Errorf("agentServiceAccount = %q, want the default %q", got.Spec.AgentServiceAccount, hubv1.DefaultAgentServiceAccount)
	}
	if got.Spec.ClusterSet == nil || !*got.Spec.ClusterSet {
		t.Errorf("clusterSet = %v, want defaulted to true", got.Spec.ClusterSet)
	}
	// The schema's defaults and MemberCluster.Default agree.
	if !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
		t.Errorf("spec defaulted by the apiserver:\n%+v\nby Default():\n%+v", got.Spec, want.Spec)
	}
	ns, name, err := got.Spec.AgentServiceAccountRef()
	if err != nil || ns != "anchorage-system" || name != "member-agent" {
		t.Errorf("AgentServiceAccountRef() = %q, %q, %v", ns, name, err)
	}

	// An explicit false survives: *bool, not a bool that omitempty would drop.
	off := validMember("no-clusterset")
	off.Spec.ClusterSet = ptr.To(false)
	if err := c.Client.Create(ctx, off); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(off), off); err != nil {
		t.Fatalf("get: %v", err)
	}
	if off.Spec.ClusterSet == nil || *off.Spec.ClusterSet || off.Spec.InClusterSet() {
		t.Errorf("clusterSet = %v, want false", off.Spec.ClusterSet)
	}

	// The list type is registered and served.
	list := &hubv1.MemberClusterList{}
	if err := c.Client.List(ctx, list); err != nil {
		t.Fatalf("list: %v", err)
	}
	found := map[string]bool{}
	for _, item := range list.Items {
		found[item.Name] = true
	}
	if !found["defaults"] || !found["no-clusterset"] {
		t.Errorf("list holds %v, want defaults and no-clusterset", found)
	}
}

func testStatusSubresource(t *testing.T, c *localcluster.Cluster) {
	ctx := t.Context()
	m := validMember("status")
	if err := c.Client.Create(ctx, m); err != nil {
		t.Fatalf("create: %v", err)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	m.Status = hubv1.MemberClusterStatus{
		Conditions: []metav1.Condition{
			{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined, LastTransitionTime: now},
			{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonBundleSetPending, LastTransitionTime: now},
		},
		LastReportTime:        &now,
		Anchors:               []hubv1.SignerAnchors{{Signer: "anchorage.dev/spiffe", PEM: "-----BEGIN CERTIFICATE-----\n...\n"}},
		JWKS:                  `{"keys":[]}`,
		AgentVersion:          "v0.1.0",
		AppliedBundleSequence: 7,
		ObservedGeneration:    m.Generation,
	}
	wantStatus := m.Status.DeepCopy()
	// A spec change sent to the status subresource is ignored...
	m.Spec.TrustDomain = "changed.example.org"
	if err := c.Client.Status().Update(ctx, m); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := &hubv1.MemberCluster{}
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if !equality.Semantic.DeepEqual(&got.Status, wantStatus) {
		t.Errorf("status after update:\n%+v\nwant\n%+v", got.Status, *wantStatus)
	}
	if got.Spec.TrustDomain != "status.example.org" {
		t.Errorf("status update changed spec.trustDomain to %q", got.Spec.TrustDomain)
	}
	// ...and so is a status change sent to the main resource.
	got.Status.AgentVersion = "v9"
	if err := c.Client.Update(ctx, got); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got.Status.AgentVersion != "v0.1.0" {
		t.Errorf("update through the main resource set status.agentVersion to %q", got.Status.AgentVersion)
	}

	// Duplicate map keys in status are refused.
	got.Status.Anchors = append(got.Status.Anchors, hubv1.SignerAnchors{Signer: "anchorage.dev/spiffe"})
	if err := c.Client.Status().Update(ctx, got); !apierrors.IsInvalid(err) {
		t.Errorf("status with two anchors for one signer: err = %v, want Invalid", err)
	}

	td := validTrustDomain("status")
	if err := c.Client.Create(ctx, td); err != nil {
		t.Fatalf("create TrustDomain: %v", err)
	}
	td.Status = hubv1.TrustDomainStatus{
		Conditions:     []metav1.Condition{{Type: hubv1.ConditionReady, Status: metav1.ConditionTrue, Reason: hubv1.ReasonBundleFetched, LastTransitionTime: now}},
		Bundle:         `{"keys":[]}`,
		SequenceNumber: 3,
		RefreshHint:    300,
		LastFetchTime:  &now,
	}
	wantTD := td.Status.DeepCopy()
	if err := c.Client.Status().Update(ctx, td); err != nil {
		t.Fatalf("TrustDomain status update: %v", err)
	}
	gotTD := &hubv1.TrustDomain{}
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(td), gotTD); err != nil {
		t.Fatalf("get: %v", err)
	}
	if !equality.Semantic.DeepEqual(&gotTD.Status, wantTD) {
		t.Errorf("TrustDomain status after update:\n%+v\nwant\n%+v", gotTD.Status, *wantTD)
	}
}

func testPrinterColumns(t *testing.T, c *localcluster.Cluster) {
	ctx := t.Context()
	td := validTrustDomain("columns")
	if err := c.Client.Create(ctx, td); err != nil {
		t.Fatalf("create: %v", err)
	}
	m := validMember("columns")
	if err := c.Client.Create(ctx, m); err != nil {
		t.Fatalf("create: %v", err)
	}
	m.Status.Conditions = []metav1.Condition{
		{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined, LastTransitionTime: metav1.Now()},
		{Type: hubv1.ConditionReady, Status: metav1.ConditionFalse, Reason: hubv1.ReasonReportStale, LastTransitionTime: metav1.Now()},
	}
	m.Status.LastReportTime = ptr.To(metav1.Now())
	if err := c.Client.Status().Update(ctx, m); err != nil {
		t.Fatalf("status update: %v", err)
	}

	for _, tc := range []struct {
		resource, object string
		columns          []string
		cells            map[string]string // column -> value in the object's row
	}{
		{
			resource: "memberclusters", object: "columns",
			columns: []string{"Name", "Trust-Domain", "Joined", "Ready", "Applied", "Last-Report", "Age"},
			cells:   map[string]string{"Trust-Domain": "columns.example.org", "Joined": "True", "Ready": "False"},
		},
		{
			resource: "trustdomains", object: "columns",
			columns: []string{"Name", "Trust-Domain", "Endpoint", "Ready", "Age"},
			cells:   map[string]string{"Trust-Domain": "columns.example.org", "Endpoint": "https://columns.example.org:8443"},
		},
	} {
		// What kubectl get asks for: the server renders the columns.
		raw, err := c.Clientset.Discovery().RESTClient().Get().
			AbsPath("/apis/hub.anchorage.dev/v1alpha1", tc.resource, tc.object).
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
			DoRaw(ctx)
		if err != nil {
			t.Fatalf("get %s/%s as a table: %v", tc.resource, tc.object, err)
		}
		var table metav1.Table
		if err := json.Unmarshal(raw, &table); err != nil {
			t.Fatalf("decoding table: %v\n%s", err, raw)
		}
		var names []string
		for _, col := range table.ColumnDefinitions {
			names = append(names, col.Name)
		}
		if strings.Join(names, ",") != strings.Join(tc.columns, ",") {
			t.Errorf("%s columns = %v, want %v (kubectl prints them upper-cased)", tc.resource, names, tc.columns)
		}
		if len(table.Rows) != 1 {
			t.Fatalf("%s table has %d rows, want 1", tc.resource, len(table.Rows))
		}
		for i, name := range names {
			want, ok := tc.cells[name]
			if !ok {
				continue
			}
			if got, _ := table.Rows[0].Cells[i].(string); got != want {
				t.Errorf("%s column %s = %v, want %q", tc.resource, name, table.Rows[0].Cells[i], want)
			}
		}
		if tc.resource == "memberclusters" {
			for i, name := range names {
				if name == "Last-Report" && table.Rows[0].Cells[i] == nil {
					t.Errorf("memberclusters column Last-Report is empty")
				}
			}
		}
	}
}
