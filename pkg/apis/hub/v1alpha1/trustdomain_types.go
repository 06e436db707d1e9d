package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BundleEndpointProfile is how a SPIFFE bundle endpoint authenticates itself
// (SPIFFE Trust Domain and Bundle, section 5.2).
//
// +kubebuilder:validation:Enum=https_web;https_spiffe
type BundleEndpointProfile string

const (
	// ProfileHTTPSWeb: the endpoint has a certificate from a web PKI CA the
	// hub trusts (its system roots).
	ProfileHTTPSWeb BundleEndpointProfile = "https_web"
	// ProfileHTTPSSPIFFE: the endpoint presents an X.509-SVID with
	// bundleEndpoint.endpointSPIFFEID, verified against the bundle of that
	// ID's trust domain.
	ProfileHTTPSSPIFFE BundleEndpointProfile = "https_spiffe"
)

// TrustDomain is a SPIFFE trust domain outside the hub (a SPIRE deployment,
// say) whose bundle the hub fetches from its bundle endpoint, honouring the
// refresh hint, so that members can federate with it. Its name is free.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=anchorage
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Trust-Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.spec.bundleEndpoint.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrustDomain struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec TrustDomainSpec `json:"spec"`
	// +optional
	Status TrustDomainStatus `json:"status,omitempty"`
}

// TrustDomainSpec says where to fetch a foreign trust domain's bundle.
//
// +kubebuilder:validation:XValidation:rule="!has(self.bundleEndpoint.endpointSPIFFEID) || has(self.bootstrapBundle) || (self.bundleEndpoint.endpointSPIFFEID != 'spiffe://' + self.trustDomain && !self.bundleEndpoint.endpointSPIFFEID.startsWith('spiffe://' + self.trustDomain + '/'))",message="bootstrapBundle is required when endpointSPIFFEID is in the trust domain itself: the hub needs it to authenticate its first fetch"
type TrustDomainSpec struct {
	// trustDomain is the SPIFFE trust domain name, e.g. "spire.example.org":
	// lowercase letters, digits, '.', '_' and '-', starting and ending with a
	// letter or digit, at most 63 characters. It cannot be changed: the
	// fetched bundle is that trust domain's; create a new TrustDomain for
	// another one.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trustDomain is immutable: create a new TrustDomain for another trust domain (and delete this one)"
	TrustDomain string `json:"trustDomain"`

	// bundleEndpoint is the trust domain's SPIFFE bundle endpoint.
	//
	// +required
	BundleEndpoint BundleEndpoint `json:"bundleEndpoint"`

	// bootstrapBundle is a SPIFFE bundle (JWK Set JSON) of the trust domain
	// to start from. It is needed with profile https_spiffe when the
	// endpoint's SPIFFE ID is in this trust domain: the hub authenticates its
	// first fetch with it.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=1048576
	BootstrapBundle string `json:"bootstrapBundle,omitempty"`
}

// BundleEndpoint is a SPIFFE bundle endpoint.
//
// +kubebuilder:validation:XValidation:rule="self.profile != 'https_spiffe' || has(self.endpointSPIFFEID)",message="endpointSPIFFEID is required when profile is https_spiffe"
// +kubebuilder:validation:XValidation:rule="self.profile == 'https_spiffe' || !has(self.endpointSPIFFEID)",message="endpointSPIFFEID is only used with profile https_spiffe"
type BundleEndpoint struct {
	// url is the endpoint's https URL, with a host and no user info, query or
	// fragment.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != '' && !self.contains('?') && !self.contains('#') && !self.split('/')[2].contains('@')",message="url must be an https URL with a host and no user info, query or fragment"
	URL string `json:"url"`

	// profile is how the endpoint authenticates: https_web (a web PKI
	// certificate) or https_spiffe (an X.509-SVID).
	//
	// +required
	Profile BundleEndpointProfile `json:"profile"`

	// endpointSPIFFEID is the SPIFFE ID the endpoint's X.509-SVID must have,
	// e.g. "spiffe://spire.example.org/spire/server". Required with profile
	// https_spiffe, not allowed otherwise.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^spiffe://[a-z0-9._-]+(/([a-zA-Z0-9_-][a-zA-Z0-9._-]*|\.[a-zA-Z0-9_-][a-zA-Z0-9._-]*|\.\.[a-zA-Z0-9._-]+))*$`
	EndpointSPIFFEID string `json:"endpointSPIFFEID,omitempty"`
}

// TrustDomainStatus is the outcome of the hub's last fetches.
type TrustDomainStatus struct {
	// conditions: Ready (the hub holds a good bundle of the trust domain).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// bundle is the last good SPIFFE bundle (JWK Set JSON) of the trust domain.
	//
	// +optional
	Bundle string `json:"bundle,omitempty"`

	// bundleTrustDomain is the trust domain bundle was fetched for. A bundle
	// document does not name its trust domain: the hub serves and pushes
	// bundle only while this is spec.trustDomain (or empty: written by an
	// older hub).
	//
	// +optional
	// +kubebuilder:validation:MaxLength=63
	BundleTrustDomain string `json:"bundleTrustDomain,omitempty"`

	// sequenceNumber is the bundle's spiffe_sequence.
	//
	// +optional
	SequenceNumber int64 `json:"sequenceNumber,omitempty"`

	// refreshHint is the bundle's spiffe_refresh_hint, in seconds.
	//
	// +optional
	RefreshHint int64 `json:"refreshHint,omitempty"`

	// lastFetchTime is the time of the last fetch that changed this status:
	// a new bundle, a first failure, or a recovery. Polls that return the
	// same bundle write nothing.
	//
	// +optional
	LastFetchTime *metav1.Time `json:"lastFetchTime,omitempty"`

	// lastFetchError is why the last fetch failed; empty after a success.
	//
	// +optional
	LastFetchError string `json:"lastFetchError,omitempty"`

	// observedGeneration is the metadata.generation the status was written for.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// TrustDomainList is a list of TrustDomains.
//
// +kubebuilder:object:root=true
type TrustDomainList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrustDomain `json:"items"`
}

// CurrentBundle returns status.bundle if it was fetched for spec.trustDomain,
// else "": a bundle of another trust domain must never be served or pushed
// as this one's. A bundle stored without bundleTrustDomain (by a hub older
// than the field) counts as this one's, so that an upgrade does not make
// members drop a working bundle; the TrustDomain reconciler checks it like
// a fetched one at its first poll, and records or clears it.
func (t *TrustDomain) CurrentBundle() string {
	if t.Status.BundleTrustDomain != "" && t.Status.BundleTrustDomain != t.Spec.TrustDomain {
		return ""
	}
	return t.Status.Bundle
}
