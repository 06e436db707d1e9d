package federation

import "encoding/json"

// Paths of the agent API, under the hub URL.
const (
	APIPrefix  = "/apis/v1/members/"
	JoinPath   = "join"
	ReportPath = "report"
)

// MaxBodyBytes bounds every agent request body: anchors of two signers
// (ClusterTrustBundles cap at 1 MiB each) and a JWKS fit well inside.
const MaxBodyBytes = 3 << 20

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
}

// Error is every error body of the hub.
type Error struct {
	Error string `json:"error"`
}
