package federation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sort"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// FederatesWithAll in Member.FederatesWith means every trust domain the
// hub knows.
const FederatesWithAll = "*"

// Member is what the bundle-set computation needs to know of a member.
type Member struct {
	Name        string
	TrustDomain string
	// FederatesWith lists peer trust domains ("*" = all on the hub).
	FederatesWith []string
	// ClusterSet: the member takes part in the MCS clusterset.
	ClusterSet bool
	// Anchors per signer name, as the member reported them.
	Anchors map[string][]*x509.Certificate
}

// External is a trust domain outside the hub (a TrustDomain object).
type External struct {
	TrustDomain string
	Anchors     []*x509.Certificate
}

// Bundle is one ClusterTrustBundle a member's agent applies.
type Bundle struct {
	Name        string            `json:"name"`
	SignerName  string            `json:"signerName"`
	Labels      map[string]string `json:"labels"`
	TrustBundle string            `json:"trustBundle"`
}

// BundleSet is everything a member must trust from the hub, with the
// member's monotonic sequence.
type BundleSet struct {
	Sequence int64    `json:"sequence"`
	Bundles  []Bundle `json:"bundles"`
}

// Desired returns the federated bundles self must hold, sorted by name:
//   - for its own trust domain, when other clusters share it, their SPIFFE
//     anchors (its own are in its local bundle; a pod selecting the trust
//     domain gets both, the kubelet merging them);
//   - for each trust domain it federates with, the SPIFFE anchors of every
//     member in it and of an external TrustDomain of that name;
//   - when it is in the clusterset, every clusterset member's service-dns
//     anchors, its own included (a clusterset name may resolve to any
//     cluster, this one too).
//
// Members without anchors add nothing; a bundle with no anchor is left out
// (the API rejects an empty bundle, and its absence removes the object).
func Desired(self Member, members []Member, external []External) []Bundle {
	spiffe := map[string][]*x509.Certificate{} // trust domain -> anchors, in member name order
	byName := slices.Clone(members)
	sort.Slice(byName, func(i, j int) bool { return byName[i].Name < byName[j].Name })
	for _, m := range byName {
		if m.Name == self.Name {
			continue
		}
		spiffe[m.TrustDomain] = append(spiffe[m.TrustDomain], m.Anchors[signers.SPIFFESignerName]...)
	}
	for _, x := range external {
		if _, member := spiffe[x.TrustDomain]; member || x.TrustDomain == self.TrustDomain {
			continue // a trust domain of the hub's members is theirs alone
		}
		spiffe[x.TrustDomain] = append(spiffe[x.TrustDomain], x.Anchors...)
	}

	wanted := map[string]bool{self.TrustDomain: true}
	for _, td := range self.FederatesWith {
		if td == FederatesWithAll {
			for t := range spiffe {
				wanted[t] = true
			}
			continue
		}
		wanted[td] = true
	}

	var out []Bundle
	for td, anchors := range spiffe {
		if !wanted[td] || len(anchors) == 0 {
			continue
		}
		out = append(out, Bundle{
			Name:       TrustDomainBundleName(td),
			SignerName: signers.SPIFFESignerName,
			Labels: map[string]string{
				LabelCanarying: CanaryingLive, LabelWorkloadTrustDomain: self.TrustDomain, LabelPeerTrustDomain: td, LabelSource: SourceHub,
			},
			TrustBundle: string(signers.EncodeCertificatesPEM(dedup(anchors))),
		})
	}
	if self.ClusterSet {
		var dns []*x509.Certificate
		for _, m := range byName {
			if m.ClusterSet || m.Name == self.Name {
				dns = append(dns, m.Anchors[signers.ServiceDNSSignerName]...)
			}
		}
		if len(dns) > 0 {
			out = append(out, Bundle{
				Name:        ClustersetBundleName(),
				SignerName:  signers.ServiceDNSSignerName,
				Labels:      map[string]string{LabelServiceDNSScope: ScopeClusterset, LabelSource: SourceHub},
				TrustBundle: string(signers.EncodeCertificatesPEM(dedup(dns))),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Digest identifies a bundle list: the hub bumps a member's sequence only
// when it changes.
func Digest(bundles []Bundle) string {
	raw, _ := json.Marshal(bundles) // maps marshal with sorted keys
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// dedup keeps the first of identical certificates: the ClusterTrustBundle
// API rejects duplicates within one object.
func dedup(certs []*x509.Certificate) []*x509.Certificate {
	seen := map[string]bool{}
	out := certs[:0:0]
	for _, c := range certs {
		if !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			out = append(out, c)
		}
	}
	return out
}
