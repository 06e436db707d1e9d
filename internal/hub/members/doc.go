// Package members holds the hub's MemberCluster controllers: the status
// reconciler (join tokens, the Joined and Ready conditions, Events) that
// runs on the leader, and the documents builder that runs on every replica
// and turns MemberClusters and TrustDomains from the informer cache into
// the documents pkg/oidcbundle serves.
package members
