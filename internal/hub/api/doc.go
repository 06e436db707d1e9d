// Package api serves the hub's agent API under /apis/v1/members/<cluster>/:
// join (the single-use join token and the cluster's JWKS), report (the
// cluster's anchors, JWKS and CA states), bundles (the long poll for the
// member's federated bundle set) and ack (the set applied). Every call
// but join is authenticated with the agent's own service-account token,
// verified with go-oidc against that member's issuer and keys; a member
// can only ever read or write its own record. Errors, here and on every
// hub route, are {"error": "..."} bodies (WriteError).
package api
