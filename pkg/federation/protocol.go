package federation

import (
	"encoding/json"
	"net/http"
	"time"
)

// Paths of the agent API, under the hub URL.
const (
	APIPrefix   = "/apis/v1/members/"
	JoinPath    = "join"
	ReportPath  = "report"
	BundlesPath = "bundles"
	AckPath     = "ack"
)

// MaxBodyBytes bounds every agent request body: anchors of two signers
// (ClusterTrustBundles cap at 1 MiB each) and a JWKS fit well inside.
const MaxBodyBytes = 3 << 20

// MaxAnswerBytes bounds what the agent reads of a hub answer: a bundle set
// of many trust domains, each under the ClusterTrustBundle limit of 1 MiB.
const MaxAnswerBytes = 64 << 20

// JoinRequest is the agent's first call: the single-use join token the hub
// wrote for this cluster, and the cluster's service-account JWKS, which
// the hub then uses to verify every later call.
type JoinRequest struct {
	Token string          `json:"token"`
	JWKS  json.RawMessage `json:"jwks"`
}

// Report is the agent's periodic call: the cluster's trust anchors per
// signer (PEM, CA certificates only), its JWKS (which may have rotated) and
// the agent's version. It also serves as the agent's lease.
type Report struct {
	Anchors      map[string]string `json:"anchors"`
	JWKS         json.RawMessage   `json:"jwks"`
	AgentVersion string            `json:"agentVersion,omitempty"`
	// CAs are the CA pools' members and their rotation states, shown on
	// the MemberCluster.
	CAs []CAStatus `json:"cas,omitempty"`
}

// CAStatus is one CA of a member's pool.
type CAStatus struct {
	Signer string `json:"signer"`
	// SubjectKeyID of the CA certificate, lowercase hex.
	SubjectKeyID string `json:"subjectKeyID"`
	// State is next, active or retired.
	State    string    `json:"state"`
	NotAfter time.Time `json:"notAfter"`
}

// Error is every error body of the hub.
type Error struct {
	Error string `json:"error"`
}

// BundleSet is the hub's answer to a member's long poll: everything the
// member must trust from the hub, with the member's sequence.
type BundleSet struct {
	// Sequence grows each time the content changes, and only then.
	Sequence int64 `json:"sequence"`
	// Bundles are the ClusterTrustBundles to hold, sorted by name. A
	// federated bundle not listed is deleted.
	Bundles []Bundle `json:"bundles"`
	// ClusterSet: the member is an accepted clusterset member and issues
	// clusterset.local names.
	ClusterSet bool `json:"clusterSet"`
	// Anchors are the member's own anchors as the hub has them, and whether
	// every member trusting each has applied it.
	Anchors []AnchorStatus `json:"anchors"`
	// Keep names federated bundles, sorted, that the member must leave as
	// they are, neither written nor deleted: their trust domain is still
	// wanted, but the hub has no bundle of it to vouch for right now (an
	// external trust domain not fetched yet, or fetched but unparsable).
	Keep []string `json:"keep,omitempty"`
}

// Bundle is one ClusterTrustBundle a member's agent applies.
type Bundle struct {
	Name        string            `json:"name"`
	SignerName  string            `json:"signerName"`
	Labels      map[string]string `json:"labels"`
	TrustBundle string            `json:"trustBundle"`
}

// AnchorStatus says whether one of the member's anchors has reached every
// member that trusts it: a `next` CA is promoted only once it has.
type AnchorStatus struct {
	Signer string `json:"signer"`
	// SubjectKeyID of the anchor, lowercase hex.
	SubjectKeyID string `json:"subjectKeyID"`
	Distributed  bool   `json:"distributed"`
}

// Ack is the agent's confirmation that it applied a bundle set.
type Ack struct {
	Sequence int64 `json:"sequence"`
	// BundlesDigest is BundlesDigest of the bundles applied.
	BundlesDigest string `json:"bundlesDigest"`
}

// WriteError answers {"error": msg} with status: the error body of every
// hub route, documents and agent API alike. Messages are read by people,
// so "<" and ">" are kept as they are; never cached.
func WriteError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(Error{Error: msg})
}
