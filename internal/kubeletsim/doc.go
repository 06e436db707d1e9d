// Package kubeletsim simulates the parts of a Kubernetes 1.37 kubelet that
// matter for pod certificates, against a real apiserver (internal/localcluster
// in tests and the sandbox).
//
// A Sim is one Node. It registers the Node, runs Pods bound to it (RunPod, or
// any pod another client creates with its spec.nodeName) and drives their
// projected volumes the way the kubelet does:
//
//   - podCertificate sources: a fresh key of the source's keyType per request,
//     an empty stub PKCS#10 request signed by it, a PodCertificateRequest named
//     "req-…" owned by the Pod, with the live Pod, ServiceAccount and Node
//     UIDs; requests are followed through one informer on
//     spec.nodeName=<node> (no per-pod polling). Issued → files written;
//     Denied or Failed → permanent for that source, refresh included. At
//     beginRefreshAt (plus jitter, or sooner with Options.RefreshAfter, or now
//     with Refresh) a new key and request replace the old ones once issued.
//   - clusterTrustBundle sources: the deduplicated certificates of the
//     matching ClusterTrustBundles, re-rendered a while after a bundle
//     changes (Options.TrustBundleRefreshDelay), as the kubelet does at the
//     pod's next sync.
//   - serviceAccountToken sources: TokenRequest tokens bound to the Pod,
//     renewed in their last 20%.
//
// Files are laid out like the kubelet's AtomicWriter does under
// <Dir>/pods/<uid>/volumes/kubernetes.io~projected/<volume>: a hidden
// timestamped folder, a "..data" symlink swapped atomically, and one symlink
// per visible name, so that file watchers see what they see on a node. A
// volume is written only when all its sources can be rendered; the pod turns
// Running (with a pod IP) once every volume was written.
//
// By default the kubelet's calls use the config given to New (an admin in
// tests); with Options.NodeConfig they use a node identity
// (system:node:<name>), so that on a cluster started with
// localcluster.Options.NodeAuthorization the node authorizer and
// NodeRestriction check them as on a real node.
//
// What it leaves out: secret, configMap and downwardAPI sources (skipped),
// containers, and garbage collection of requests (the apiserver alone does not
// follow owner references).
package kubeletsim
