// Package federation holds the hub↔agent protocol (the request and answer
// types of the agent API under /apis/v1/members/<cluster>/ and the client
// the member agent uses), the ClusterTrustBundle names and labels, and the
// federation graph: Sets computes every member's bundle set from the
// members' anchors, their federatesWith and clusterSet, external trust
// domains and the members' acks.
package federation
