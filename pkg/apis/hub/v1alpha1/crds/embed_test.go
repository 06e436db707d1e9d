package crds_test

import (
	"bytes"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1/crds"
)

func TestEmbedded(t *testing.T) {
	all := crds.All()
	if len(all) != 2 {
		t.Fatalf("All() has %d CRDs, want 2", len(all))
	}
	if !bytes.Equal(all[0], crds.MemberCluster) || !bytes.Equal(all[1], crds.TrustDomain) {
		t.Errorf("All() is not [MemberCluster, TrustDomain]")
	}
	all[0][0] = 'x'
	if crds.All()[0][0] == 'x' {
		t.Errorf("All() hands out shared memory")
	}
	for doc, want := range map[*[]byte]string{&crds.MemberCluster: "memberclusters.hub.anchorage.dev", &crds.TrustDomain: "trustdomains.hub.anchorage.dev"} {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(*doc, crd); err != nil {
			t.Fatalf("decoding %s: %v", want, err)
		}
		if crd.Name != want || crd.Spec.Scope != apiextensionsv1.ClusterScoped || crd.Spec.Versions[0].Subresources == nil || crd.Spec.Versions[0].Subresources.Status == nil {
			t.Errorf("CRD %s: name %q, scope %s, subresources %+v", want, crd.Name, crd.Spec.Scope, crd.Spec.Versions[0].Subresources)
		}
	}
}
