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

// Member is what the bundle-set computation needs to know of a joined
// member.
type Member struct {
	Name        string
	TrustDomain string
	// FederatesWith lists peer trust domains ("*" = all on the hub).
	FederatesWith []string
	// ClusterSet: the member takes part in the MCS clusterset.
	ClusterSet bool
	// Anchors per signer name, as the member reported them.
	Anchors map[string][]*x509.Certificate
	// AppliedDigest is the BundlesDigest the agent last acked ("" if none).
	AppliedDigest string
}

// External is a trust domain outside the hub (a TrustDomain object).
// Without Anchors it is known but has no bundle the hub can vouch for (not
// fetched yet, or what was fetched does not parse): members federating
// with it are told to keep whatever bundle of it they hold.
type External struct {
	TrustDomain string
	Anchors     []*x509.Certificate
}

// Sets computes every member's bundle set (Sequence left zero: the hub
// assigns sequences). Each set holds:
//   - for the member's own trust domain, when other clusters share it, their
//     SPIFFE anchors (its own are in its local bundle; a pod selecting the
//     trust domain gets both, the kubelet merging them);
//   - for each trust domain it federates with, the SPIFFE anchors of every
//     member in it, or of an external TrustDomain of that name when no
//     member has it;
//   - when it is in the clusterset, every clusterset member's service-dns
//     anchors, its own included (a clusterset name may resolve to any
//     cluster, this one too);
//   - the state of its own anchors: Distributed once every member whose set
//     holds the anchor has acked that set (the gate of CA promotion);
//   - Keep: the bundles of wanted external trust domains that have no
//     anchors yet, which the agent must neither write nor delete (only an
//     explicit removal deletes a federated bundle).
//
// Members without anchors add nothing; a bundle with no anchor is left out
// (the API rejects an empty bundle, and its absence removes the object).
// Cost: linear in members plus the bundles handed out, so that a change
// reaching a thousand members is computed in milliseconds.
func Sets(members []Member, external []External) map[string]BundleSet {
	byName := slices.Clone(members)
	sort.Slice(byName, func(i, j int) bool { return byName[i].Name < byName[j].Name })

	// Trust domain -> its clusters' SPIFFE anchors, in member name order.
	type contribution struct {
		member  string
		anchors []*x509.Certificate
	}
	spiffe := map[string][]contribution{}
	for _, m := range byName {
		spiffe[m.TrustDomain] = append(spiffe[m.TrustDomain], contribution{m.Name, m.Anchors[signers.SPIFFESignerName]})
	}
	unvouched := map[string]bool{} // external trust domains without anchors
	for _, x := range external {
		if _, member := spiffe[x.TrustDomain]; !member {
			spiffe[x.TrustDomain] = []contribution{{"", x.Anchors}} // a member trust domain is theirs alone
			unvouched[x.TrustDomain] = len(x.Anchors) == 0
		}
	}
	allTDs := make([]string, 0, len(spiffe))
	for td := range spiffe {
		allTDs = append(allTDs, td)
	}
	sort.Strings(allTDs)

	// Bundles shared by many members are built once.
	type built struct {
		bundle  Bundle
		anchors []*x509.Certificate
	}
	// A peer's anchors and PEM are the same for every member trusting it;
	// only the labels (the workload's trust domain) differ.
	type shared struct {
		anchors []*x509.Certificate
		pem     string
	}
	peerCache := map[string]*shared{}
	spiffeBundle := func(self Member, peer string) *built {
		own := peer == self.TrustDomain // one's own trust domain excludes one's own anchors
		sh, ok := peerCache[peer]
		if !ok || own {
			var anchors []*x509.Certificate
			for _, c := range spiffe[peer] {
				if c.member != self.Name {
					anchors = append(anchors, c.anchors...)
				}
			}
			anchors = dedup(anchors)
			sh = &shared{anchors: anchors, pem: string(signers.EncodeCertificatesPEM(anchors))}
			if !own {
				peerCache[peer] = sh
			}
		}
		if len(sh.anchors) == 0 {
			return nil
		}
		return &built{anchors: sh.anchors, bundle: Bundle{
			Name:       TrustDomainBundleName(peer),
			SignerName: signers.SPIFFESignerName,
			Labels: map[string]string{
				LabelCanarying: CanaryingLive, LabelWorkloadTrustDomain: self.TrustDomain, LabelPeerTrustDomain: peer, LabelSource: SourceHub,
			},
			TrustBundle: sh.pem,
		}}
	}
	var clusterset *built
	{
		var dns []*x509.Certificate
		for _, m := range byName {
			if m.ClusterSet {
				dns = append(dns, m.Anchors[signers.ServiceDNSSignerName]...)
			}
		}
		if len(dns) > 0 {
			dns = dedup(dns)
			clusterset = &built{anchors: dns, bundle: Bundle{
				Name:        ClustersetBundleName(),
				SignerName:  signers.ServiceDNSSignerName,
				Labels:      map[string]string{LabelServiceDNSScope: ScopeClusterset, LabelSource: SourceHub},
				TrustBundle: string(signers.EncodeCertificatesPEM(dns)),
			}}
		}
	}

	out := make(map[string]BundleSet, len(byName))
	// pending: anchors held by a set its member has not acked yet.
	pending := map[string]bool{}
	for _, m := range byName {
		// The trust domains wanted, without walking every trust domain for
		// every member (a thousand members would make that a million steps).
		wanted := allTDs
		if !slices.Contains(m.FederatesWith, FederatesWithAll) {
			wanted = append([]string{m.TrustDomain}, m.FederatesWith...)
			slices.Sort(wanted)
			wanted = slices.Compact(wanted)
		}
		var parts []*built
		var keep []string
		for _, td := range wanted {
			if _, known := spiffe[td]; !known {
				continue
			}
			if unvouched[td] {
				keep = append(keep, TrustDomainBundleName(td))
			} else if b := spiffeBundle(m, td); b != nil {
				parts = append(parts, b)
			}
		}
		if m.ClusterSet && clusterset != nil {
			parts = append(parts, clusterset)
		}
		set := BundleSet{ClusterSet: m.ClusterSet, Bundles: make([]Bundle, 0, len(parts)), Keep: keep} // wanted is sorted, so keep is
		for _, p := range parts {
			set.Bundles = append(set.Bundles, p.bundle)
		}
		sort.Slice(set.Bundles, func(i, j int) bool { return set.Bundles[i].Name < set.Bundles[j].Name })
		if m.AppliedDigest != BundlesDigest(set.Bundles) {
			for _, p := range parts {
				for _, a := range p.anchors {
					pending[string(a.Raw)] = true
				}
			}
		}
		out[m.Name] = set
	}
	for _, m := range byName {
		set := out[m.Name]
		for _, signer := range signers.SignerNames() {
			for _, a := range m.Anchors[signer] {
				set.Anchors = append(set.Anchors, AnchorStatus{Signer: signer, SubjectKeyID: hex.EncodeToString(a.SubjectKeyId), Distributed: !pending[string(a.Raw)]})
			}
		}
		out[m.Name] = set
	}
	return out
}

// BundlesDigest identifies a bundle list; the agent acks the digest of
// what it applied.
func BundlesDigest(bundles []Bundle) string {
	return digest(bundles)
}

// Digest identifies a bundle set's content, its sequence aside: the hub
// bumps a member's sequence only when it changes.
func (s BundleSet) Digest() string {
	s.Sequence = 0
	return digest(s)
}

func digest(v any) string {
	raw, _ := json.Marshal(v) // maps marshal with sorted keys
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
