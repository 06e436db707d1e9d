// Package localcluster starts real kube-apiservers (v1.37.1) backed by etcd on
// loopback, for tests and for the sandbox.
//
// The binaries are not downloaded: hack/envtest-assets.sh builds them from
// source through the Go module proxy once and caches them (see AssetsDir).
// Clusters are started with controller-runtime's envtest, so they have what a
// real control plane has at the API layer (RBAC authorization, admission
// including ClusterTrustBundleAttest, TokenRequest-minted service-account
// tokens, OIDC discovery, CRDs) and nothing else: no kube-controller-manager,
// scheduler or kubelet. In particular there is no garbage collector (owner
// references are not followed), no ServiceAccount admission plugin (envtest
// disables it, so pods get no token volume and no default ServiceAccount is
// created) and no PodCertificateRequest cleaner. internal/kubeletsim plays the
// kubelet.
//
// Tests use RequireAssets and StartT; the sandbox uses EnsureAssets and Start.
package localcluster
