package federation

import (
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

func newAnchor(t *testing.T, td string) *x509.Certificate {
	t.Helper()
	ca, err := signers.NewCA(signers.Env{}, signers.SPIFFECAProfile("c", td, "https://hub.invalid/clusters/c"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Certificate
}

func member(t *testing.T, name, td string, clusterSet bool, federates ...string) Member {
	return Member{Name: name, TrustDomain: td, ClusterSet: clusterSet, FederatesWith: federates, Anchors: map[string][]*x509.Certificate{
		signers.SPIFFESignerName:     {newAnchor(t, td)},
		signers.ServiceDNSSignerName: {newAnchor(t, td)},
	}}
}

func names(bs []Bundle) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

func anchorsOf(t *testing.T, b Bundle) []*x509.Certificate {
	t.Helper()
	certs, err := signers.ParseCertificatesPEM([]byte(b.TrustBundle))
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func desired(name string, members []Member, external []External) []Bundle {
	return Sets(members, external)[name].Bundles
}

func TestSets(t *testing.T) {
	east := member(t, "east", "east.example", true, "west.example")
	east2 := member(t, "east-2", "east.example", true)
	west := member(t, "west", "west.example", true)
	north := member(t, "north", "north.example", false, FederatesWithAll)
	empty := Member{Name: "fresh", TrustDomain: "fresh.example", ClusterSet: true} // joined, not reported yet
	spire := External{TrustDomain: "spire.example", Anchors: []*x509.Certificate{newAnchor(t, "spire.example")}}
	all := []Member{west, east, east2, north, empty}

	t.Run("own trust domain, federatesWith and the clusterset", func(t *testing.T) {
		got := desired(east.Name, all, []External{spire})
		want := []string{"anchorage.dev:service-dns:clusterset", "anchorage.dev:spiffe:td-east.example", "anchorage.dev:spiffe:td-west.example"}
		if !slices.Equal(names(got), want) {
			t.Fatalf("bundles %v, want %v", names(got), want)
		}
		own := got[1]
		if a := anchorsOf(t, own); len(a) != 1 || !a[0].Equal(east2.Anchors[signers.SPIFFESignerName][0]) {
			t.Error("own trust domain bundle must hold the other cluster's anchor only (ours are local)")
		}
		wantLabels := map[string]string{LabelCanarying: "live", LabelWorkloadTrustDomain: "east.example", LabelPeerTrustDomain: "west.example", LabelSource: "hub"}
		if !maps.Equal(got[2].Labels, wantLabels) || got[2].SignerName != signers.SPIFFESignerName {
			t.Errorf("west bundle labels %v signer %s", got[2].Labels, got[2].SignerName)
		}
		// Clusterset: east, east-2 and west (north is not in it; fresh has
		// no anchors), own included.
		if a := anchorsOf(t, got[0]); len(a) != 3 || got[0].SignerName != signers.ServiceDNSSignerName ||
			!maps.Equal(got[0].Labels, map[string]string{LabelServiceDNSScope: "clusterset", LabelSource: "hub"}) {
			t.Errorf("clusterset bundle: %d anchors, labels %v", len(a), got[0].Labels)
		}
	})

	t.Run("* federates with every trust domain, external ones included; no clusterset", func(t *testing.T) {
		got := desired(north.Name, all, []External{spire})
		want := []string{"anchorage.dev:spiffe:td-east.example", "anchorage.dev:spiffe:td-spire.example", "anchorage.dev:spiffe:td-west.example"}
		if !slices.Equal(names(got), want) {
			t.Fatalf("bundles %v, want %v", names(got), want)
		}
		if a := anchorsOf(t, got[0]); len(a) != 2 {
			t.Errorf("east.example spans two clusters: want one anchor each, got %d", len(a))
		}
	})

	t.Run("a trust domain not federated with is absent", func(t *testing.T) {
		got := desired(west.Name, all, []External{spire})
		if slices.Contains(names(got), "anchorage.dev:spiffe:td-east.example") || slices.Contains(names(got), "anchorage.dev:spiffe:td-spire.example") {
			t.Errorf("west federates with nobody: %v", names(got))
		}
	})

	t.Run("an external trust domain never overrides a member's", func(t *testing.T) {
		fake := External{TrustDomain: "west.example", Anchors: []*x509.Certificate{newAnchor(t, "west.example")}}
		got := desired(east.Name, all, []External{fake})
		w := got[slices.Index(names(got), "anchorage.dev:spiffe:td-west.example")]
		if a := anchorsOf(t, w); len(a) != 1 || !a[0].Equal(west.Anchors[signers.SPIFFESignerName][0]) {
			t.Error("west.example must hold only the member west's anchor")
		}
	})

	t.Run("an external trust domain without anchors is kept, not removed", func(t *testing.T) {
		unfetched := External{TrustDomain: "spire.example"}
		sets := Sets(all, []External{unfetched})
		if got := sets[north.Name]; !slices.Equal(got.Keep, []string{"anchorage.dev:spiffe:td-spire.example"}) ||
			slices.Contains(names(got.Bundles), "anchorage.dev:spiffe:td-spire.example") {
			t.Errorf("north (federates with *): keep %v, bundles %v", got.Keep, names(got.Bundles))
		}
		if got := sets[east.Name]; got.Keep != nil {
			t.Errorf("east does not federate with spire.example, yet keeps %v", got.Keep)
		}
		if sets[north.Name].Digest() == Sets(all, nil)[north.Name].Digest() {
			t.Error("keeping a bundle and removing it must not share a digest")
		}
		// A member trust domain is never the external's to hold back.
		ghost := External{TrustDomain: "west.example"}
		if got := Sets(all, []External{ghost})[east.Name]; got.Keep != nil || !slices.Contains(names(got.Bundles), "anchorage.dev:spiffe:td-west.example") {
			t.Errorf("east: keep %v, bundles %v", got.Keep, names(got.Bundles))
		}
	})

	t.Run("deterministic, and the digest follows the content", func(t *testing.T) {
		shuffled := []Member{north, east2, empty, east, west}
		a, b := desired(east.Name, all, []External{spire}), desired(east.Name, shuffled, []External{spire})
		if BundlesDigest(a) != BundlesDigest(b) {
			t.Error("member order changed the answer")
		}
		west2 := west
		west2.Anchors = map[string][]*x509.Certificate{signers.SPIFFESignerName: {newAnchor(t, "west.example")}}
		if BundlesDigest(desired(east.Name, []Member{east, east2, west2, north}, nil)) == BundlesDigest(a) {
			t.Error("a changed anchor did not change the digest")
		}
	})

	t.Run("duplicate anchors are merged", func(t *testing.T) {
		dup := east2
		dup.Name = "east-3"
		got := desired(east.Name, []Member{east, east2, dup}, nil)
		if a := anchorsOf(t, got[slices.Index(names(got), "anchorage.dev:spiffe:td-east.example")]); len(a) != 1 {
			t.Errorf("%d anchors; the API rejects duplicates in one bundle", len(a))
		}
	})
}

func TestSetsAnchorDistribution(t *testing.T) {
	east := member(t, "east", "east.example", true, "west.example")
	west := member(t, "west", "west.example", true)
	north := member(t, "north", "north.example", false) // trusts nobody, so it never holds up anyone
	all := func() []Member { return []Member{east, west, north} }
	distributed := func(sets map[string]BundleSet, name string) map[string]bool {
		out := map[string]bool{}
		for _, a := range sets[name].Anchors {
			out[a.Signer] = a.Distributed
		}
		return out
	}

	sets := Sets(all(), nil)
	// Nobody acked: west's SPIFFE anchor is in east's set, both service-dns
	// anchors are in both clusterset bundles.
	want := map[string]bool{signers.SPIFFESignerName: false, signers.ServiceDNSSignerName: false}
	if got := distributed(sets, "west"); !maps.Equal(got, want) {
		t.Errorf("west before any ack: %v, want %v", got, want)
	}
	// east's SPIFFE anchor is in nobody's set (west does not federate back).
	if got := distributed(sets, "east"); !got[signers.SPIFFESignerName] || got[signers.ServiceDNSSignerName] {
		t.Errorf("east before any ack: %v", got)
	}
	if got := distributed(sets, "north"); !got[signers.SPIFFESignerName] || !got[signers.ServiceDNSSignerName] {
		t.Errorf("north is in nobody's set: %v", got)
	}

	east.AppliedDigest = BundlesDigest(sets["east"].Bundles)
	sets = Sets(all(), nil)
	if got := distributed(sets, "west"); !got[signers.SPIFFESignerName] || got[signers.ServiceDNSSignerName] {
		t.Errorf("east acked, west not: west's SPIFFE anchor is everywhere, its service-dns one waits for west's own ack: %v", got)
	}
	west.AppliedDigest = BundlesDigest(sets["west"].Bundles)
	sets = Sets(all(), nil)
	for _, m := range []string{"east", "west", "north"} {
		for s, ok := range distributed(sets, m) {
			if !ok {
				t.Errorf("all acked, %s's %s anchor still pending", m, s)
			}
		}
	}

	// A new anchor in west: east's bundles change, its old ack no longer
	// covers them, so the new anchor waits; the answer to west says so.
	next := newAnchor(t, "west.example")
	west.Anchors = map[string][]*x509.Certificate{signers.SPIFFESignerName: {west.Anchors[signers.SPIFFESignerName][0], next}, signers.ServiceDNSSignerName: west.Anchors[signers.ServiceDNSSignerName]}
	sets = Sets(all(), nil)
	if a := sets["west"].Anchors; len(a) != 3 || a[1].Distributed || a[1].SubjectKeyID != fmt.Sprintf("%x", next.SubjectKeyId) {
		t.Errorf("new anchor: %+v", a)
	}
	if !sets["west"].ClusterSet || sets["north"].ClusterSet {
		t.Error("clusterSet membership")
	}
	// Sequences aside, the digest tells content apart.
	if sets["west"].Digest() == Sets([]Member{east, member(t, "west", "west.example", true), north}, nil)["west"].Digest() {
		t.Error("digest ignores the anchors")
	}
}

func TestTrustDomainBundleName(t *testing.T) {
	if got := TrustDomainBundleName("west.example"); got != "anchorage.dev:spiffe:td-west.example" {
		t.Errorf("got %s", got)
	}
	a, b := TrustDomainBundleName("a_b.example"), TrustDomainBundleName("a-b.example")
	if a == b || strings.Contains(a, "_") || !strings.HasPrefix(a, "anchorage.dev:spiffe:td-a-b.example-") {
		t.Errorf("underscore names: %s vs %s", a, b)
	}
	if LocalBundleName(signers.SPIFFESignerName) != "anchorage.dev:spiffe:local" || ClustersetBundleName() != "anchorage.dev:service-dns:clusterset" {
		t.Error("fixed names")
	}
}
