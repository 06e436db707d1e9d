// Package v1alpha1 holds the hub's API, group hub.anchorage.dev: the
// MemberCluster and TrustDomain custom resources the hub keeps its state in.
//
// Both are cluster-scoped. A MemberCluster is named after its cluster id (a
// DNS label) and says which OIDC issuer and SPIFFE trust domain the member
// has, which service account its agent runs as and which trust domains it
// federates with; its status holds what the member's agent last reported. A
// TrustDomain is a trust domain outside the hub (a SPIRE deployment, say) whose
// SPIFFE bundle the hub fetches from a bundle endpoint.
//
// The CRD schemas are generated from the markers in this package (see
// hack/generate.sh) and embedded in package crds. Validate and ValidateUpdate
// of each kind implement exactly the rules the schemas enforce, so code that
// handles objects that never went through an apiserver (a fake client, a
// file) reaches the same verdict; the tests hold the two together.
//
// The package imports apimachinery and go-spiffe's spiffeid (for the SPIFFE
// grammar) only.
//
// +kubebuilder:object:generate=true
// +groupName=hub.anchorage.dev
package v1alpha1
