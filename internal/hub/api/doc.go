// Package api serves the hub's agent API under /apis/v1/members/<cluster>/:
// join (the single-use join token and the cluster's JWKS) and report (the
// cluster's anchors and JWKS, authenticated with the agent's own
// service-account token, verified with go-oidc against that member's
// issuer and keys). A member can only ever write its own record.
package api
