package federation

import (
	"crypto/x509"
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

func TestDesired(t *testing.T) {
	east := member(t, "east", "east.example", true, "west.example")
	east2 := member(t, "east-2", "east.example", true)
	west := member(t, "west", "west.example", true)
	north := member(t, "north", "north.example", false, FederatesWithAll)
	empty := Member{Name: "fresh", TrustDomain: "fresh.example", ClusterSet: true} // joined, not reported yet
	spire := External{TrustDomain: "spire.example", Anchors: []*x509.Certificate{newAnchor(t, "spire.example")}}
	all := []Member{west, east, east2, north, empty}

	t.Run("own trust domain, federatesWith and the clusterset", func(t *testing.T) {
		got := Desired(east, all, []External{spire})
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
		got := Desired(north, all, []External{spire})
		want := []string{"anchorage.dev:spiffe:td-east.example", "anchorage.dev:spiffe:td-spire.example", "anchorage.dev:spiffe:td-west.example"}
		if !slices.Equal(names(got), want) {
			t.Fatalf("bundles %v, want %v", names(got), want)
		}
		if a := anchorsOf(t, got[0]); len(a) != 2 {
			t.Errorf("east.example spans two clusters: want one anchor each, got %d", len(a))
		}
	})

	t.Run("a trust domain not federated with is absent", func(t *testing.T) {
		got := Desired(west, all, []External{spire})
		if slices.Contains(names(got), "anchorage.dev:spiffe:td-east.example") || slices.Contains(names(got), "anchorage.dev:spiffe:td-spire.example") {
			t.Errorf("west federates with nobody: %v", names(got))
		}
	})

	t.Run("an external trust domain never overrides a member's", func(t *testing.T) {
		fake := External{TrustDomain: "west.example", Anchors: []*x509.Certificate{newAnchor(t, "west.example")}}
		got := Desired(east, all, []External{fake})
		w := got[slices.Index(names(got), "anchorage.dev:spiffe:td-west.example")]
		if a := anchorsOf(t, w); len(a) != 1 || !a[0].Equal(west.Anchors[signers.SPIFFESignerName][0]) {
			t.Error("west.example must hold only the member west's anchor")
		}
	})

	t.Run("deterministic, and the digest follows the content", func(t *testing.T) {
		shuffled := []Member{north, east2, empty, east, west}
		a, b := Desired(east, all, []External{spire}), Desired(east, shuffled, []External{spire})
		if Digest(a) != Digest(b) {
			t.Error("member order changed the answer")
		}
		west2 := west
		west2.Anchors = map[string][]*x509.Certificate{signers.SPIFFESignerName: {newAnchor(t, "west.example")}}
		if Digest(Desired(east, []Member{east, east2, west2, north}, nil)) == Digest(a) {
			t.Error("a changed anchor did not change the digest")
		}
	})

	t.Run("duplicate anchors are merged", func(t *testing.T) {
		dup := east2
		dup.Name = "east-3"
		got := Desired(east, []Member{east, east2, dup}, nil)
		if a := anchorsOf(t, got[slices.Index(names(got), "anchorage.dev:spiffe:td-east.example")]); len(a) != 1 {
			t.Errorf("%d anchors; the API rejects duplicates in one bundle", len(a))
		}
	})
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
