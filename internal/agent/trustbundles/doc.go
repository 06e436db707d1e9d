// Package trustbundles writes the ClusterTrustBundles of DESIGN.md: the
// cluster's own anchors (one object per signer, the local publisher) and
// the federated bundles the hub pushes (applied by hubclient's Follower).
// One object per (signer, peer trust domain), so pods select one peer at a
// time. Each owner converges only the names it owns, leaves the names its
// set keeps as they are, and never touches anyone else's bundles; objects
// are applied server-side and only when their content or labels differ.
package trustbundles
