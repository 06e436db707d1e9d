package v1alpha1_test

import (
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"

	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

const (
	accept = true
	reject = false
)

// memberCases edit a valid MemberCluster named "east"; want is the verdict
// both the Go validation and the apiserver must reach.
var memberCases = []struct {
	name string
	want bool
	edit func(m *hubv1.MemberCluster)
}{
	{"valid", accept, func(m *hubv1.MemberCluster) {}},
	{"name/63 characters", accept, func(m *hubv1.MemberCluster) { m.Name = strings.Repeat("a", 63) }},
	{"name/digits and dashes", accept, func(m *hubv1.MemberCluster) { m.Name = "0-east-1" }},
	{"name/64 characters", reject, func(m *hubv1.MemberCluster) { m.Name = strings.Repeat("a", 64) }},
	{"name/dotted (a DNS subdomain, not a label)", reject, func(m *hubv1.MemberCluster) { m.Name = "east.example" }},
	{"name/uppercase", reject, func(m *hubv1.MemberCluster) { m.Name = "East" }},
	{"name/leading dash", reject, func(m *hubv1.MemberCluster) { m.Name = "-east" }},
	{"name/trailing dash", reject, func(m *hubv1.MemberCluster) { m.Name = "east-" }},
	{"name/underscore", reject, func(m *hubv1.MemberCluster) { m.Name = "east_1" }},

	{"issuer/port and path", accept, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub.example.org:8443/clusters/east" }},
	{"issuer/host only", accept, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub.example.org" }},
	{"issuer/trailing slash", accept, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub.example.org/clusters/east/" }},
	{"issuer/IPv6 host", accept, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://[::1]:6443" }},
	{"issuer/upper-case scheme", accept, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "HTTPS://hub.example.org/x" }},
	{"issuer/@ in the path", accept, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub.example.org/a@b" }},
	{"issuer/http", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "http://hub.example.org/clusters/east" }},
	{"issuer/empty", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "" }},
	{"issuer/no scheme", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "hub.example.org/clusters/east" }},
	{"issuer/relative", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "/clusters/east" }},
	{"issuer/no host", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https:///clusters/east" }},
	{"issuer/opaque", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https:hub.example.org" }},
	{"issuer/port only", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://:443/x" }},
	{"issuer/query", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub.example.org/clusters/east?x=1" }},
	{"issuer/fragment", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub.example.org/clusters/east#x" }},
	{"issuer/user info", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://user:pw@hub.example.org/clusters/east" }},
	{"issuer/space in host", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "https://hub example.org/" }},
	{"issuer/2048 characters", accept, func(m *hubv1.MemberCluster) {
		m.Spec.Issuer = "https://hub.example.org/" + strings.Repeat("a", 2048-len("https://hub.example.org/"))
	}},
	{"issuer/2049 characters", reject, func(m *hubv1.MemberCluster) {
		m.Spec.Issuer = "https://hub.example.org/" + strings.Repeat("a", 2049-len("https://hub.example.org/"))
	}},

	// maxLength counts characters, not bytes: "é" is two bytes in UTF-8.
	{"issuer/2048 characters, multi-byte", accept, func(m *hubv1.MemberCluster) {
		m.Spec.Issuer = "https://hub.example.org/" + strings.Repeat("é", 2048-len("https://hub.example.org/"))
	}},
	{"issuer/2049 characters, multi-byte", reject, func(m *hubv1.MemberCluster) {
		m.Spec.Issuer = "https://hub.example.org/" + strings.Repeat("é", 2049-len("https://hub.example.org/"))
	}},

	{"trustDomain/underscore and dashes", accept, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "east_1.example-org" }},
	{"trustDomain/single character", accept, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "e" }},
	{"trustDomain/63 characters", accept, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = strings.Repeat("e", 59) + ".org" }},
	{"trustDomain/64 characters", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = strings.Repeat("e", 60) + ".org" }},
	{"trustDomain/uppercase", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "East.example.org" }},
	{"trustDomain/empty", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "" }},
	{"trustDomain/a SPIFFE ID", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "spiffe://east.example.org" }},
	{"trustDomain/port", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "east.example.org:443" }},
	{"trustDomain/trailing dot", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "east.example.org." }},
	{"trustDomain/leading dash", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "-east.example.org" }},
	{"trustDomain/non-ASCII", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "ést.example.org" }},

	{"agentServiceAccount/explicit default", accept, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "anchorage-system/member-agent" }},
	{"agentServiceAccount/dotted name", accept, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "kube-system/agent.v2" }},
	{"agentServiceAccount/longest parts", accept, func(m *hubv1.MemberCluster) {
		m.Spec.AgentServiceAccount = strings.Repeat("n", 63) + "/" + strings.Repeat("s", 253)
	}},
	{"agentServiceAccount/namespace 64 characters", reject, func(m *hubv1.MemberCluster) {
		m.Spec.AgentServiceAccount = strings.Repeat("n", 64) + "/agent"
	}},
	{"agentServiceAccount/name 254 characters", reject, func(m *hubv1.MemberCluster) {
		m.Spec.AgentServiceAccount = "ns/" + strings.Repeat("s", 254)
	}},
	{"agentServiceAccount/no namespace", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "member-agent" }},
	{"agentServiceAccount/empty namespace", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "/member-agent" }},
	{"agentServiceAccount/empty name", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "anchorage-system/" }},
	{"agentServiceAccount/three parts", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "a/b/c" }},
	{"agentServiceAccount/dotted namespace", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "a.b/agent" }},
	{"agentServiceAccount/uppercase", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "Anchorage-System/member-agent" }},
	{"agentServiceAccount/the username form", reject, func(m *hubv1.MemberCluster) {
		m.Spec.AgentServiceAccount = "system:serviceaccount:anchorage-system:member-agent"
	}},

	{"federatesWith/list", accept, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"west.example.org", "spire.example.org"} }},
	{"federatesWith/all", accept, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*"} }},
	{"federatesWith/all and one", accept, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*", "west.example.org"} }},
	{"federatesWith/1024 items", accept, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = trustDomains(1024) }},
	{"federatesWith/1025 items", reject, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = trustDomains(1025) }},
	{"federatesWith/duplicates", reject, func(m *hubv1.MemberCluster) {
		m.Spec.FederatesWith = []string{"west.example.org", "spire.example.org", "west.example.org"}
	}},
	{"federatesWith/duplicate stars", reject, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*", "*"} }},
	{"federatesWith/uppercase", reject, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"West.example.org"} }},
	{"federatesWith/empty item", reject, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{""} }},
	{"federatesWith/glob", reject, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*.example.org"} }},
	{"federatesWith/64 characters", reject, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{strings.Repeat("w", 64)} }},

	{"clusterSet/false", accept, func(m *hubv1.MemberCluster) { f := false; m.Spec.ClusterSet = &f }},
}

// memberUpdateCases edit a stored valid MemberCluster.
var memberUpdateCases = []struct {
	name string
	want bool
	edit func(m *hubv1.MemberCluster)
}{
	{"no change", accept, func(m *hubv1.MemberCluster) {}},
	// The member's CAs are name-constrained to its trust domain: its anchors
	// must never be served as another's.
	{"trust domain changed", reject, func(m *hubv1.MemberCluster) { m.Spec.TrustDomain = "renamed.example.org" }},
	{"federatesWith changed", accept, func(m *hubv1.MemberCluster) { m.Spec.FederatesWith = []string{"*"} }},
	{"issuer changed", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer += "/v2" }},
	{"issuer changed to an invalid one", reject, func(m *hubv1.MemberCluster) { m.Spec.Issuer = "http://x" }},
	{"agentServiceAccount made invalid", reject, func(m *hubv1.MemberCluster) { m.Spec.AgentServiceAccount = "agent" }},
}

// trustDomainUpdateCases edit a stored valid TrustDomain.
var trustDomainUpdateCases = []struct {
	name string
	want bool
	edit func(td *hubv1.TrustDomain)
}{
	{"no change", accept, func(td *hubv1.TrustDomain) {}},
	{"url changed", accept, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.URL = "https://moved.example.org/bundle" }},
	// status.bundle is the old trust domain's: a rename would serve its CAs
	// under the new name.
	{"trust domain changed", reject, func(td *hubv1.TrustDomain) { td.Spec.TrustDomain = "renamed.example.org" }},
	{"url made invalid", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.URL = "http://x" }},
}

// trustDomainCases edit a valid TrustDomain (profile https_web).
var trustDomainCases = []struct {
	name string
	want bool
	edit func(td *hubv1.TrustDomain)
}{
	{"valid https_web", accept, func(td *hubv1.TrustDomain) {}},
	{"https_spiffe, endpoint in another trust domain", accept, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://other.example.org/spire/server")
	}},
	{"https_spiffe, endpoint in the trust domain, with bootstrap bundle", accept, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://spire.example.org/spire/server")
		td.Spec.BootstrapBundle = `{"keys":[]}`
	}},
	{"https_spiffe, the trust domain's own ID, with bootstrap bundle", accept, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://spire.example.org")
		td.Spec.BootstrapBundle = `{"keys":[]}`
	}},
	{"https_spiffe, endpoint in a trust domain with the same prefix", accept, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://spire.example.org.evil/x")
	}},
	{"https_spiffe, dotted path segments", accept, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://other.example.org/.a/..b/.../a.b/A_Z-9")
	}},
	{"https_spiffe without endpointSPIFFEID", reject, func(td *hubv1.TrustDomain) {
		td.Spec.BundleEndpoint.Profile = hubv1.ProfileHTTPSSPIFFE
	}},
	{"https_web with endpointSPIFFEID", reject, func(td *hubv1.TrustDomain) {
		td.Spec.BundleEndpoint.EndpointSPIFFEID = "spiffe://other.example.org/spire/server"
	}},
	{"https_spiffe, endpoint in the trust domain, no bootstrap bundle", reject, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://spire.example.org/spire/server")
	}},
	{"https_spiffe, the trust domain's own ID, no bootstrap bundle", reject, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://spire.example.org")
	}},
	{"endpointSPIFFEID/dot segment", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe://other.example.org/a/./b") }},
	{"endpointSPIFFEID/dot-dot segment", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe://other.example.org/a/..") }},
	{"endpointSPIFFEID/empty segment", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe://other.example.org/a//b") }},
	{"endpointSPIFFEID/trailing slash", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe://other.example.org/a/") }},
	{"endpointSPIFFEID/uppercase trust domain", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe://Other.example.org/a") }},
	{"endpointSPIFFEID/bad path character", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe://other.example.org/a:b") }},
	{"endpointSPIFFEID/no trust domain", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "spiffe:///a") }},
	{"endpointSPIFFEID/wrong scheme", reject, func(td *hubv1.TrustDomain) { spiffeProfile(td, "https://other.example.org/a") }},
	{"endpointSPIFFEID/2049 characters", reject, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://other.example.org/"+strings.Repeat("a", 2049-len("spiffe://other.example.org/")))
	}},
	{"endpointSPIFFEID/2048 characters", accept, func(td *hubv1.TrustDomain) {
		spiffeProfile(td, "spiffe://other.example.org/"+strings.Repeat("a", 2048-len("spiffe://other.example.org/")))
	}},
	{"profile/unknown", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.Profile = "https_weird" }},
	{"profile/empty", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.Profile = "" }},
	{"profile/uppercase", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.Profile = "HTTPS_WEB" }},
	{"url/http", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.URL = "http://spire.example.org:8443" }},
	{"url/query", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.URL = "https://spire.example.org:8443/?x=1" }},
	{"url/empty", reject, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.URL = "" }},
	{"url/path", accept, func(td *hubv1.TrustDomain) { td.Spec.BundleEndpoint.URL = "https://spire.example.org/bundle" }},
	{"trustDomain/uppercase", reject, func(td *hubv1.TrustDomain) { td.Spec.TrustDomain = "Spire.example.org" }},
	{"trustDomain/64 characters", reject, func(td *hubv1.TrustDomain) { td.Spec.TrustDomain = strings.Repeat("s", 64) }},
	{"trustDomain/empty", reject, func(td *hubv1.TrustDomain) { td.Spec.TrustDomain = "" }},
	{"bootstrapBundle/with https_web", accept, func(td *hubv1.TrustDomain) { td.Spec.BootstrapBundle = `{"keys":[]}` }},
	{"bootstrapBundle/1 MiB", accept, func(td *hubv1.TrustDomain) { td.Spec.BootstrapBundle = strings.Repeat("x", 1<<20) }},
	{"bootstrapBundle/1 Mi characters, multi-byte", accept, func(td *hubv1.TrustDomain) { td.Spec.BootstrapBundle = strings.Repeat("é", 1<<20) }},
	{"bootstrapBundle/over 1 MiB", reject, func(td *hubv1.TrustDomain) { td.Spec.BootstrapBundle = strings.Repeat("x", 1<<20+1) }},
	{"name/free form (dotted)", accept, func(td *hubv1.TrustDomain) { td.Name = "spire.example.org" }},
}

func trustDomains(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("td-%d.example.org", i)
	}
	return out
}

func spiffeProfile(td *hubv1.TrustDomain, id string) {
	td.Spec.BundleEndpoint.Profile = hubv1.ProfileHTTPSSPIFFE
	td.Spec.BundleEndpoint.EndpointSPIFFEID = id
}

func validTrustDomain(name string) *hubv1.TrustDomain {
	return &hubv1.TrustDomain{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: hubv1.TrustDomainSpec{
			TrustDomain: name + ".example.org",
			BundleEndpoint: hubv1.BundleEndpoint{
				URL:     "https://" + name + ".example.org:8443",
				Profile: hubv1.ProfileHTTPSWeb,
			},
		},
	}
}

// TestValidateCases runs the agreement table through the Go validation alone,
// so that it checks the expected verdicts even where no apiserver runs.
func TestValidateCases(t *testing.T) {
	for _, tc := range memberCases {
		m := validMember("east")
		tc.edit(m)
		if err := m.Validate(); (err == nil) != tc.want {
			t.Errorf("MemberCluster %s: Validate() = %v, want accepted=%v", tc.name, err, tc.want)
		}
	}
	for _, tc := range memberUpdateCases {
		old := validMember("east")
		old.Default()
		m := old.DeepCopy()
		tc.edit(m)
		if err := m.ValidateUpdate(old); (err == nil) != tc.want {
			t.Errorf("MemberCluster update %s: ValidateUpdate() = %v, want accepted=%v", tc.name, err, tc.want)
		}
	}
	for _, tc := range trustDomainCases {
		td := validTrustDomain("spire")
		tc.edit(td)
		if err := td.Validate(); (err == nil) != tc.want {
			t.Errorf("TrustDomain %s: Validate() = %v, want accepted=%v", tc.name, err, tc.want)
		}
	}
	for _, tc := range trustDomainUpdateCases {
		old := validTrustDomain("spire")
		td := old.DeepCopy()
		tc.edit(td)
		if err := td.ValidateUpdate(old); (err == nil) != tc.want {
			t.Errorf("TrustDomain update %s: ValidateUpdate() = %v, want accepted=%v", tc.name, err, tc.want)
		}
	}
}

// testSchemaAgreement sends every case to the apiserver (dry run) and checks
// that it reaches the verdict the Go validation reaches, and the expected one.
func testSchemaAgreement(t *testing.T, c *localcluster.Cluster) {
	ctx := t.Context()
	for _, tc := range memberCases {
		t.Run("MemberCluster/"+tc.name, func(t *testing.T) {
			m := validMember("east")
			tc.edit(m)
			goErr := m.Validate()
			apiErr := c.Client.Create(ctx, m.DeepCopy(), client.DryRunAll)
			checkVerdict(t, tc.want, goErr, apiErr)
		})
	}
	for i, tc := range memberUpdateCases {
		t.Run("MemberCluster/update/"+tc.name, func(t *testing.T) {
			old := validMember(fmt.Sprintf("update-%d", i))
			if err := c.Client.Create(ctx, old); err != nil {
				t.Fatalf("create: %v", err)
			}
			m := old.DeepCopy()
			tc.edit(m)
			goErr := m.ValidateUpdate(old)
			apiErr := c.Client.Update(ctx, m.DeepCopy(), client.DryRunAll)
			checkVerdict(t, tc.want, goErr, apiErr)
		})
	}
	for _, tc := range trustDomainCases {
		t.Run("TrustDomain/"+tc.name, func(t *testing.T) {
			td := validTrustDomain("spire")
			tc.edit(td)
			goErr := td.Validate()
			apiErr := c.Client.Create(ctx, td.DeepCopy(), client.DryRunAll)
			checkVerdict(t, tc.want, goErr, apiErr)
		})
	}
	for i, tc := range trustDomainUpdateCases {
		t.Run("TrustDomain/update/"+tc.name, func(t *testing.T) {
			old := validTrustDomain(fmt.Sprintf("update-%d", i))
			if err := c.Client.Create(ctx, old); err != nil {
				t.Fatalf("create: %v", err)
			}
			td := old.DeepCopy()
			tc.edit(td)
			goErr := td.ValidateUpdate(old)
			apiErr := c.Client.Update(ctx, td.DeepCopy(), client.DryRunAll)
			checkVerdict(t, tc.want, goErr, apiErr)
			if tc.name == "trust domain changed" && !strings.Contains(errString(apiErr), "create a new TrustDomain") {
				t.Errorf("the apiserver's refusal does not say what to do instead: %v", apiErr)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func checkVerdict(t *testing.T, want bool, goErr, apiErr error) {
	t.Helper()
	if apiErr != nil && !apierrors.IsInvalid(apiErr) {
		t.Fatalf("apiserver failed with something other than a validation error: %v", apiErr)
	}
	t.Logf("Go: %v", verdict(goErr))
	t.Logf("apiserver: %v", verdict(apiErr))
	if (goErr == nil) != (apiErr == nil) {
		t.Errorf("Go validation and CRD schema disagree:\n  Go:        %v\n  apiserver: %v", verdict(goErr), verdict(apiErr))
		return
	}
	if (goErr == nil) != want {
		t.Errorf("both say %v, want accepted=%v", verdict(goErr), want)
	}
}

func verdict(err error) string {
	if err == nil {
		return "accepted"
	}
	return "rejected: " + err.Error()
}
