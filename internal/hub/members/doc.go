// Package members holds the hub's MemberCluster controllers: the status
// reconciler (join tokens, the Joined and Ready conditions, Events) that
// runs on the leader; the documents builder that runs on every replica and
// turns MemberClusters and TrustDomains from the informer cache into the
// documents pkg/oidcbundle serves; and the bundle sets, computed on every
// replica, sequenced by the leader in one ConfigMap, and handed to the
// agents' long polls.
package members
