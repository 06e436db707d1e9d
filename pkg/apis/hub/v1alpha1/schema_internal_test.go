package v1alpha1

import (
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1/crds"
)

func decodeCRD(t *testing.T, doc []byte) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(doc, crd); err != nil {
		t.Fatalf("decoding CRD: %v", err)
	}
	return crd
}

// schemaAt walks a CRD's v1alpha1 schema along property names ("[]" = items).
func schemaAt(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition, path ...string) apiextensionsv1.JSONSchemaProps {
	t.Helper()
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Fatalf("CRD %s: versions %+v, want only v1alpha1", crd.Name, crd.Spec.Versions)
	}
	s := *crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	for _, p := range path {
		if p == "[]" {
			if s.Items == nil || s.Items.Schema == nil {
				t.Fatalf("CRD %s: no items at %v", crd.Name, path)
			}
			s = *s.Items.Schema
			continue
		}
		next, ok := s.Properties[p]
		if !ok {
			t.Fatalf("CRD %s: no property %q on the way to %v", crd.Name, p, path)
		}
		s = next
	}
	return s
}

// TestSchemaLimits checks that the limits and patterns in validation.go are
// the strings and numbers in the generated CRDs.
func TestSchemaLimits(t *testing.T) {
	mc, td := decodeCRD(t, crds.MemberCluster), decodeCRD(t, crds.TrustDomain)
	for _, tc := range []struct {
		crd       *apiextensionsv1.CustomResourceDefinition
		path      []string
		pattern   string
		maxLength int64
	}{
		{mc, []string{"spec", "issuer"}, "", maxURLLen},
		{mc, []string{"spec", "trustDomain"}, trustDomainNamePattern, maxTrustDomainLen},
		{mc, []string{"spec", "agentServiceAccount"}, agentServiceAccountPattern, 63 + 1 + 253},
		{mc, []string{"spec", "federatesWith", "[]"}, federatesWithPattern, maxTrustDomainLen},
		{td, []string{"spec", "trustDomain"}, trustDomainNamePattern, maxTrustDomainLen},
		{td, []string{"spec", "bundleEndpoint", "url"}, "", maxURLLen},
		{td, []string{"spec", "bundleEndpoint", "endpointSPIFFEID"}, endpointSPIFFEIDPattern, maxSPIFFEIDLen},
		{td, []string{"spec", "bootstrapBundle"}, "", maxBootstrapBundleLen},
	} {
		s := schemaAt(t, tc.crd, tc.path...)
		if s.Pattern != tc.pattern {
			t.Errorf("%s %v: pattern %q, validation.go has %q", tc.crd.Name, tc.path, s.Pattern, tc.pattern)
		}
		if s.MaxLength == nil || *s.MaxLength != tc.maxLength {
			t.Errorf("%s %v: maxLength %v, validation.go has %d", tc.crd.Name, tc.path, s.MaxLength, tc.maxLength)
		}
	}
	if s := schemaAt(t, mc, "spec", "federatesWith"); s.MaxItems == nil || *s.MaxItems != maxFederatesWith {
		t.Errorf("federatesWith maxItems %v, validation.go has %d", s.MaxItems, maxFederatesWith)
	}
	if s := schemaAt(t, mc, "spec", "agentServiceAccount"); s.Default == nil || string(s.Default.Raw) != `"`+DefaultAgentServiceAccount+`"` {
		t.Errorf("agentServiceAccount default %v, want %q", s.Default, DefaultAgentServiceAccount)
	}
	if s := schemaAt(t, mc, "spec", "clusterSet"); s.Default == nil || string(s.Default.Raw) != "true" {
		t.Errorf("clusterSet default %v, want true", s.Default)
	}
	var enum []string
	for _, v := range schemaAt(t, td, "spec", "bundleEndpoint", "profile").Enum {
		enum = append(enum, string(v.Raw))
	}
	if len(enum) != 2 || enum[0] != `"`+string(ProfileHTTPSWeb)+`"` || enum[1] != `"`+string(ProfileHTTPSSPIFFE)+`"` {
		t.Errorf("profile enum %v, want the two BundleEndpointProfile constants", enum)
	}
}
