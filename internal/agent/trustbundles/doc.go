// Package trustbundles writes the ClusterTrustBundles of DESIGN.md: the
// cluster's own anchors (one object per signer) and, later, the federated
// bundles the hub pushes. One object per (signer, peer trust domain), so
// pods select one peer at a time; objects are applied server-side and only
// when their content or labels differ.
package trustbundles
