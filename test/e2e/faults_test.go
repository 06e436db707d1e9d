package e2e

import (
	"context"
	"io"
	"maps"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/hub/members"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// issue runs a pod in m and waits for its SPIFFE certificate: signing
// must not depend on the hub.
func (m *memberEnv) issue(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	sim, err := kubeletsim.New(m.cl.Config, kubeletsim.Options{NodeName: "node-" + name, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	p, err := sim.RunPod(ctx, kubeletsim.NewPod("default", name, "default", kubeletsim.PodCertificateSource(signers.SPIFFESignerName, "ECDSAP256")))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitIssued(wctx); err != nil {
		t.Fatalf("issuing for %s while the hub is away: %v", name, err)
	}
}

// The hub stops (every replica; agents reach it through a proxy, as
// through a Service) while west starts a CA rotation: both agents keep
// their bundles and keep signing, and west does not promote a CA nobody
// has confirmed. The hub then comes back, a new process with nothing in
// memory: the rotation completes from what the API holds.
func TestHubOutageRotationAndFailover(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx)
	hubURL, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := localcluster.NewTCPProxy(hubURL.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	viaProxy := func(o *agentapp.Options) { o.HubURL, o.CAPromotionDelay = "https://"+proxy.Addr(), 0 }
	east, west := e.startPair(viaProxy)
	tdWest := federation.TrustDomainBundleName("west.example")
	oldWest := west.pool(t, signers.SPIFFESignerName).Anchors(time.Now())
	poll(t, 30*time.Second, "east holds west's anchor", func() bool { return holds(east.hubBundles(t)[tdWest], oldWest...) })

	e.sb.StopReplicas()
	proxy.Cut()
	rotate := &agentapp.CAOptions{Action: "rotate", Namespace: "anchorage-system", Wait: 30 * time.Second}
	if err := agentapp.CA(ctx, west.cl.Config, rotate, []string{signers.SPIFFESignerName}, io.Discard); err != nil {
		t.Fatal(err)
	}
	next := west.pool(t, signers.SPIFFESignerName).Next()
	if next == nil {
		t.Fatal("west has no next CA after ca rotate")
	}
	east.issue(t, ctx, "during-outage-east")
	west.issue(t, ctx, "during-outage-west")
	time.Sleep(2 * time.Second) // time for a wrong promotion to show
	if p := west.pool(t, signers.SPIFFESignerName); p.Next() == nil {
		t.Fatal("west promoted its next CA while no member could have applied it")
	}
	if !holds(east.hubBundles(t)[tdWest], oldWest...) {
		t.Fatal("east lost or changed west's bundle while the hub was away")
	}

	// The hub returns, a fresh process behind the same address.
	replica, _ := e.startReplica("hub-0", e.url) // same name: same development certificate
	proxy.SetTarget(replica.Addr())
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "east trusts west's next CA and west promotes it", func() bool {
		p := west.pool(t, signers.SPIFFESignerName)
		active, err := p.Active()
		return err == nil && active.Certificate.Equal(next.Certificate) && holds(east.hubBundles(t)[tdWest], append(oldWest, next.Certificate)...)
	})
	old := west.pool(t, signers.SPIFFESignerName).CAs[0]
	if old.State != signers.StateRetired {
		t.Errorf("the old CA is %s, want retired (published until its leaves expire)", old.State)
	}
	poll(t, 30*time.Second, "the MemberCluster shows the rotation", func() bool {
		states := map[string]string{}
		for _, ca := range e.member("west").Status.CertificateAuthorities {
			if ca.Signer == signers.SPIFFESignerName {
				states[ca.SubjectKeyID] = ca.State
			}
		}
		return len(states) == 2 && states[next.SKID()] == "active" && states[old.SKID()] == "retired"
	})
	var seqs corev1.ConfigMap
	if err := e.hubCl.Client.Get(ctx, client.ObjectKey{Namespace: "anchorage-hub", Name: members.SequencesConfigMap}, &seqs); err != nil || seqs.Data["east"] == "" || seqs.Data["west"] == "" {
		t.Errorf("sequences ConfigMap: %v %v", err, seqs.Data)
	}
	// A leaf from west now chains to the new CA.
	west.issue(t, ctx, "after-rotation")
}

// bundleVersions maps each ClusterTrustBundle of m to its resourceVersion.
func (m *memberEnv) bundleVersions(t *testing.T) map[string]string {
	t.Helper()
	var list certsv1.ClusterTrustBundleList
	if err := m.cl.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range list.Items {
		out[b.Name] = b.ResourceVersion
	}
	return out
}

// An agent restarted with nothing in memory picks the federation up where
// it was: its first answer is the set it already holds, so it writes no
// bundle; then it follows the next change.
func TestAgentRestartConverges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx)
	east, west := e.startPair()
	tdWest := federation.TrustDomainBundleName("west.example")
	poll(t, 30*time.Second, "east holds west's bundle and acked it", func() bool {
		return len(east.hubBundles(t)[tdWest]) == 1 && e.member("east").Status.AppliedBundleSequence > 0
	})
	before := east.bundleVersions(t)

	if err := e.sb.RestartAgent(east.m); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "the new agent applied and acked the hub's set", func() bool {
		seq := gauge(t, east.m.Agent.Registry, "anchorage_agent_bundle_set_sequence")
		return seq > 0 && seq == float64(e.member("east").Status.AppliedBundleSequence)
	})
	if after := east.bundleVersions(t); !maps.Equal(before, after) {
		t.Errorf("the restarted agent rewrote bundles that had not changed:\nbefore %v\nafter  %v", before, after)
	}

	rotate := &agentapp.CAOptions{Action: "rotate", Namespace: "anchorage-system", Wait: 30 * time.Second}
	if err := agentapp.CA(ctx, west.cl.Config, rotate, []string{signers.SPIFFESignerName}, io.Discard); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the restarted agent follows west's new anchor", func() bool { return len(east.hubBundles(t)[tdWest]) == 2 })
}

// gauge reads an unlabelled gauge from a registry.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
