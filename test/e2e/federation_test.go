package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certsv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// hubBundles returns the hub-sourced ClusterTrustBundles of a member by
// name, each with its parsed anchors.
func (m *memberEnv) hubBundles(t *testing.T) map[string][]*x509.Certificate {
	t.Helper()
	var list certsv1.ClusterTrustBundleList
	if err := m.cl.Client.List(context.Background(), &list, client.MatchingLabels{federation.LabelSource: federation.SourceHub}); err != nil {
		t.Fatal(err)
	}
	out := map[string][]*x509.Certificate{}
	for _, b := range list.Items {
		certs, err := signers.ParseCertificatesPEM([]byte(b.Spec.TrustBundle))
		if err != nil {
			t.Fatalf("bundle %s: %v", b.Name, err)
		}
		out[b.Name] = certs
	}
	return out
}

// settled: the member has applied the set the hub publishes for it, and
// every anchor of that set is distributed, so no change is on its way (a
// peer's ack flips an anchor to distributed, which is a new set).
func (e *hubEnv) settled(t *testing.T, name string) bool {
	t.Helper()
	entry, ok := e.hub.Sets.Current(name)
	if !ok || e.member(name).Status.AppliedBundleSequence != entry.Sequence {
		return false
	}
	var set federation.BundleSet
	if err := json.Unmarshal(e.hub.Sets.Next(context.Background(), name, entry.Sequence-1, 0), &set); err != nil {
		t.Fatal(err)
	}
	for _, a := range set.Anchors {
		if !a.Distributed {
			return false
		}
	}
	return set.Sequence == entry.Sequence
}

func holds(certs []*x509.Certificate, want ...*x509.Certificate) bool {
	if len(certs) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(certs, w.Equal) {
			return false
		}
	}
	return true
}

// startPair starts members east and west, each federating with the other
// (agent adjusts both agents), and waits until both are joined and ready.
func (e *hubEnv) startPair(agent ...func(*agentapp.Options)) (east, west *memberEnv) {
	e.t.Helper()
	east = e.startMemberWith("east", "east.example", []string{"west.example"}, agent...)
	west = e.startMemberWith("west", "west.example", []string{"east.example"}, agent...)
	for _, name := range []string{"east", "west"} {
		if err := e.sb.WaitReady(e.ctx, name, 60*time.Second); err != nil {
			e.t.Fatal(err)
		}
	}
	return east, west
}

// The hub pushes each member the bundles of the trust domains it
// federates with and the clusterset bundle; removing a trust domain from
// federatesWith, or a member from the hub, removes its anchors everywhere.
func TestFederationPushAndRemoval(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx)
	east, west := e.startPair()
	eastSPIFFE, eastDNS := east.pool(t, signers.SPIFFESignerName).Anchors(time.Now()), east.pool(t, signers.ServiceDNSSignerName).Anchors(time.Now())
	westSPIFFE, westDNS := west.pool(t, signers.SPIFFESignerName).Anchors(time.Now()), west.pool(t, signers.ServiceDNSSignerName).Anchors(time.Now())
	tdWest, tdEast, cs := federation.TrustDomainBundleName("west.example"), federation.TrustDomainBundleName("east.example"), federation.ClustersetBundleName()

	poll(t, 60*time.Second, "each member holds its peer's SPIFFE anchors and the clusterset bundle", func() bool {
		eb, wb := east.hubBundles(t), west.hubBundles(t)
		return len(eb) == 2 && holds(eb[tdWest], westSPIFFE...) && holds(eb[cs], append(slices.Clone(eastDNS), westDNS...)...) &&
			len(wb) == 2 && holds(wb[tdEast], eastSPIFFE...) && holds(wb[cs], append(slices.Clone(eastDNS), westDNS...)...)
	})
	var ctb certsv1.ClusterTrustBundle
	if err := east.cl.Client.Get(ctx, client.ObjectKey{Name: tdWest}, &ctb); err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{federation.LabelCanarying: "live", federation.LabelWorkloadTrustDomain: "east.example", federation.LabelPeerTrustDomain: "west.example", federation.LabelSource: "hub"}
	if !maps.Equal(ctb.Labels, wantLabels) || ctb.Spec.SignerName != signers.SPIFFESignerName {
		t.Errorf("td-west labels %v signer %s", ctb.Labels, ctb.Spec.SignerName)
	}
	poll(t, 20*time.Second, "both members settled (every anchor distributed, the last set acked)", func() bool {
		return e.settled(t, "east") && e.settled(t, "west")
	})

	// Someone deletes a federated bundle: the agent restores it from the
	// hub's last answer, without a new one.
	seq := e.member("east").Status.AppliedBundleSequence
	if err := east.cl.Client.Delete(ctx, &ctb); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "east's deleted td-west restored", func() bool { return holds(east.hubBundles(t)[tdWest], westSPIFFE...) })
	if now := e.member("east").Status.AppliedBundleSequence; now != seq {
		t.Errorf("east's applied sequence moved from %d to %d: the repair needed a new answer", seq, now)
	}

	// east stops federating with west.example: only its td-west goes.
	mc := e.member("east")
	if err := e.hubCl.Client.Patch(ctx, mc, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"federatesWith":null}}`))); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "east's td-west bundle deleted", func() bool {
		eb := east.hubBundles(t)
		_, ok := eb[tdWest]
		return !ok && len(eb) == 1
	})
	if wb := west.hubBundles(t); len(wb) != 2 {
		t.Errorf("west lost bundles: %v", slices.Collect(maps.Keys(wb)))
	}

	// west leaves the hub: its service-dns anchors leave east's clusterset bundle.
	if err := e.hubCl.Client.Delete(ctx, e.member("west")); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "west's anchors gone from east", func() bool {
		eb := east.hubBundles(t)
		return len(eb) == 1 && holds(eb[cs], eastDNS...)
	})

	// The push is visible in the hub's and the agent's metrics, and a
	// scrape of either succeeds.
	resp, body := e.get(e.url + "/metrics")
	for _, want := range []string{"anchorage_hub_bundle_set_changes_total", "anchorage_hub_long_polls", "anchorage_hub_bundle_set_compute_seconds_count", "go_goroutines"} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("hub /metrics: %d, no %s in\n%.600s", resp.StatusCode, want, body)
		}
	}
	mfs, err := prometheus.Gatherers{crmetrics.Registry, east.m.Agent.Registry}.Gather()
	if err != nil {
		t.Fatalf("the agent's metrics do not gather: %v", err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"anchorage_agent_bundle_set_sequence", "anchorage_agent_federated_bundles", "anchorage_agent_ca_pool_cas", "go_goroutines"} {
		if !slices.Contains(names, want) {
			t.Errorf("agent metrics lack %s", want)
		}
	}
}
