// Package federation holds the hub↔agent protocol: the request and answer
// types of the agent API under /apis/v1/members/<cluster>/ and the client
// the member agent uses. Hub state, the federation graph and bundle sets
// join it with issue #4.
package federation
