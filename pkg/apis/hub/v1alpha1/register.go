package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the hub's resources.
const GroupName = "hub.anchorage.dev"

// GroupVersion is the group and version of the types in this package.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resource returns the GroupResource of an unqualified resource name of this
// group, e.g. Resource("memberclusters").
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

var (
	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
	// Install is AddToScheme, under the name newer APIs (mcs-api, Gateway API) use.
	Install = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MemberCluster{},
		&MemberClusterList{},
		&TrustDomain{},
		&TrustDomainList{},
	)
	// For the meta types clients send with list and watch calls (ListOptions...).
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
