package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultAgentServiceAccount is spec.agentServiceAccount when it is not set:
// the service account deploy/member runs the member agent as.
const DefaultAgentServiceAccount = "anchorage-system/member-agent"

// FederateWithAll in spec.federatesWith means every trust domain the hub knows
// (its members' and its TrustDomains').
const FederateWithAll = "*"

// MemberCluster is a cluster registered with the hub. Its name is the cluster
// id, a DNS label; the hub serves the member's OIDC documents and trust
// anchors under its issuer, authenticates its agent with the member's
// service-account tokens and pushes it the bundles of the trust domains it
// federates with.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=anchorage
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Trust-Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="Joined",type=string,JSONPath=`.status.conditions[?(@.type=="Joined")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.appliedBundleSequence`
// +kubebuilder:printcolumn:name="Last-Report",type=date,JSONPath=`.status.lastReportTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name is the cluster id and must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
type MemberCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec MemberClusterSpec `json:"spec"`
	// +optional
	Status MemberClusterStatus `json:"status,omitempty"`
}

// MemberClusterSpec is what an operator says about a member cluster.
type MemberClusterSpec struct {
	// issuer is the member cluster's service-account issuer (its apiserver's
	// --service-account-issuer): an https URL with a host and no user info,
	// query or fragment. The hub verifies the agent's tokens against it. It
	// cannot be changed; delete and re-create the MemberCluster instead.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != '' && !self.contains('?') && !self.contains('#') && !self.split('/')[2].contains('@')",message="issuer must be an https URL with a host and no user info, query or fragment"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="issuer is immutable: delete and re-create the MemberCluster to change it"
	Issuer string `json:"issuer"`

	// trustDomain is the member's SPIFFE trust domain name, e.g.
	// "east.example.org": lowercase letters, digits, '.', '_' and '-',
	// starting and ending with a letter or digit, at most 63 characters (so it
	// can be a label value). It cannot be changed: the member's CAs are
	// name-constrained to it and its reported anchors are that trust
	// domain's; delete and re-create the MemberCluster instead.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trustDomain is immutable: delete and re-create the MemberCluster to change it"
	TrustDomain string `json:"trustDomain"`

	// agentServiceAccount is the member agent's service account in the member
	// cluster, "namespace/name". Tokens whose subject is another account are
	// refused.
	//
	// +optional
	// +kubebuilder:default="anchorage-system/member-agent"
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self.size() - self.indexOf('/') <= 254",message="the service account name after '/' must be at most 253 characters"
	AgentServiceAccount string `json:"agentServiceAccount,omitempty"`

	// federatesWith lists the trust domains whose bundles the member trusts,
	// besides its own; "*" means every trust domain on the hub.
	//
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9]([a-z0-9._-]*[a-z0-9])?)$`
	FederatesWith []string `json:"federatesWith,omitempty"`

	// clusterSet says whether the member belongs to the hub's MCS cluster set
	// (clusterset.local names). Unset means true; see InClusterSet.
	//
	// +optional
	// +kubebuilder:default=true
	ClusterSet *bool `json:"clusterSet,omitempty"`
}

// MemberClusterStatus is what the hub knows of a member, mostly from its agent.
type MemberClusterStatus struct {
	// conditions: Joined (the agent has redeemed its join token) and Ready
	// (the agent reports and has applied the current bundle set).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// lastReportTime is when the agent last reported.
	//
	// +optional
	LastReportTime *metav1.Time `json:"lastReportTime,omitempty"`

	// anchors are the member's trust anchors as its agent last reported them,
	// one entry per signer.
	//
	// +optional
	// +listType=map
	// +listMapKey=signer
	Anchors []SignerAnchors `json:"anchors,omitempty"`

	// jwks is the member's service-account JWKS (raw JSON), as its agent read
	// it from its apiserver's /openid/v1/jwks.
	//
	// +optional
	JWKS string `json:"jwks,omitempty"`

	// certificateAuthorities are the CAs of the member's pools as its agent
	// last reported them, with their rotation state: a rotation under way
	// shows a "next" CA.
	//
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	CertificateAuthorities []CertificateAuthority `json:"certificateAuthorities,omitempty"`

	// agentVersion is the version the agent last reported.
	//
	// +optional
	AgentVersion string `json:"agentVersion,omitempty"`

	// appliedBundleSequence is the sequence of the last federated bundle set
	// the agent acknowledged as applied.
	//
	// +optional
	AppliedBundleSequence int64 `json:"appliedBundleSequence,omitempty"`

	// appliedBundleDigest is the digest of the bundles of that set, as the
	// agent computed it over what it applied: the hub compares it with the
	// member's current bundles to know which anchors have reached it.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AppliedBundleDigest string `json:"appliedBundleDigest,omitempty"`

	// anchorsSequence is incremented by the hub each time the reported
	// anchors change; it is the spiffe_sequence of the member's SPIFFE
	// bundle, the same on every hub replica.
	//
	// +optional
	// +kubebuilder:validation:Minimum=0
	AnchorsSequence int64 `json:"anchorsSequence,omitempty"`

	// observedGeneration is the metadata.generation the status was written for.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// SignerAnchors are the trust anchors of one signer of a member.
type SignerAnchors struct {
	// signer is the signer name, e.g. "anchorage.dev/spiffe".
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	Signer string `json:"signer"`

	// pem holds the signer's CA certificates, PEM encoded.
	//
	// +optional
	PEM string `json:"pem,omitempty"`
}

// CertificateAuthority is one CA of a member's pool.
type CertificateAuthority struct {
	// signer is the signer name, e.g. "anchorage.dev/spiffe".
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	Signer string `json:"signer"`

	// subjectKeyID of the CA certificate, lowercase hex.
	//
	// +required
	// +kubebuilder:validation:MaxLength=128
	SubjectKeyID string `json:"subjectKeyID"`

	// state is next (published, not signing yet), active (signing) or
	// retired (published until its last leaf expires).
	//
	// +required
	// +kubebuilder:validation:Enum=next;active;retired
	State string `json:"state"`

	// notAfter is the end of the CA certificate's validity.
	//
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
}

// MemberClusterList is a list of MemberClusters.
//
// +kubebuilder:object:root=true
type MemberClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MemberCluster `json:"items"`
}

// InClusterSet reports spec.clusterSet, which defaults to true.
func (s *MemberClusterSpec) InClusterSet() bool {
	return s.ClusterSet == nil || *s.ClusterSet
}

// FederatesWithAll reports whether spec.federatesWith holds "*".
func (s *MemberClusterSpec) FederatesWithAll() bool {
	for _, td := range s.FederatesWith {
		if td == FederateWithAll {
			return true
		}
	}
	return false
}

// Default sets the defaults the CRD schema applies: agentServiceAccount and
// clusterSet. Use it on objects that did not come from an apiserver.
func (m *MemberCluster) Default() {
	if m.Spec.AgentServiceAccount == "" {
		m.Spec.AgentServiceAccount = DefaultAgentServiceAccount
	}
	if m.Spec.ClusterSet == nil {
		t := true
		m.Spec.ClusterSet = &t
	}
}
