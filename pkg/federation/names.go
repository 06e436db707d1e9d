package federation

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// ClusterTrustBundle labels of DESIGN.md ("ClusterTrustBundles written by
// the agent"); the first three follow the SPIFFE filesystem-delivery draft.
const (
	LabelCanarying           = "k8s.spiffe.io/canarying"
	LabelWorkloadTrustDomain = "k8s.spiffe.io/workload-trust-domain"
	LabelPeerTrustDomain     = "k8s.spiffe.io/peer-trust-domain"
	LabelServiceDNSScope     = "service-dns.anchorage.dev/scope"
	LabelSource              = "anchorage.dev/source"
	CanaryingLive            = "live"
	ScopeCluster             = "cluster"
	ScopeClusterset          = "clusterset"
	SourceHub                = "hub"
)

// namePrefix is what the apiserver requires of a signer-linked bundle's
// name: the signer name with "/" turned into ":", then ":".
func namePrefix(signer string) string { return strings.ReplaceAll(signer, "/", ":") + ":" }

// LocalBundleName is the bundle of a cluster's own anchors of signer.
func LocalBundleName(signer string) string { return namePrefix(signer) + "local" }

// ClustersetBundleName is the bundle of every clusterset member's
// service-dns anchors.
func ClustersetBundleName() string { return namePrefix(signers.ServiceDNSSignerName) + "clusterset" }

// TrustDomainBundleName is the federated SPIFFE bundle of a peer trust
// domain: anchorage.dev:spiffe:td-<trust domain>. A trust domain may hold
// "_", which object names may not: it becomes "-" and, so that two trust
// domains never share a name, a short hash of the original is appended.
func TrustDomainBundleName(td string) string {
	clean := strings.ReplaceAll(td, "_", "-")
	if clean != td {
		sum := sha256.Sum256([]byte(td))
		clean += "-" + hex.EncodeToString(sum[:4])
	}
	return namePrefix(signers.SPIFFESignerName) + "td-" + clean
}
