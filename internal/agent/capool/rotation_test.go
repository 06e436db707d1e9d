package capool

import (
	"os"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func testCA(t *testing.T, keyName string, state signers.CAState) *signers.CA {
	t.Helper()
	data, err := os.ReadFile("../../../pkg/signers/testdata/" + keyName + ".key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := signers.ParsePrivateKeyPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := signers.NewCA(signers.Env{Clock: clocktesting.NewFakePassiveClock(t0)}, signers.SPIFFECAProfile("east", "east.example", "https://hub.example/clusters/east"), key)
	if err != nil {
		t.Fatal(err)
	}
	ca.State = state
	return ca
}

// A retired CA written into the pool by hand has no retirement time: the
// rotation times it from now, keeps it published while its leaves may
// live, and prunes it a leaf lifetime later.
func TestRotationStampsRetiredWithoutTime(t *testing.T) {
	r := &Rotation{PromotionDelay: time.Minute}
	pool := &signers.Pool{Signer: signers.SPIFFESignerName, CAs: []*signers.CA{
		testCA(t, "ca-p256", signers.StateActive), testCA(t, "ca2-p256", signers.StateRetired),
	}}

	stamped, _, what, err := r.step(pool, "", SignerConfig{}, t0)
	if err != nil || stamped == nil {
		t.Fatalf("step: %v, %v", stamped, err)
	}
	if len(stamped.CAs) != 2 {
		t.Fatalf("the retired CA was dropped at once (%s)", what)
	}
	if got := stamped.CAs[1].RetiredAt; !got.Equal(t0) {
		t.Errorf("retiredAt %v, want %v (%s)", got, t0, what)
	}
	next, requeue, _, err := r.step(stamped, "", SignerConfig{}, t0.Add(time.Hour))
	if err != nil || next != nil || requeue != signers.MaxLeafLifetime-time.Hour {
		t.Errorf("an hour later: pool %v, requeue %v, err %v; want no change until the leaves expire", next, requeue, err)
	}
	pruned, _, _, err := r.step(stamped, "", SignerConfig{}, t0.Add(signers.MaxLeafLifetime))
	if err != nil || pruned == nil || len(pruned.CAs) != 1 {
		t.Errorf("a leaf lifetime later: %v, %v; want the retired CA pruned", pruned, err)
	}
}

// gate is a Gate the test opens and closes.
type gate struct{ open bool }

func (g *gate) Distributed(string, string) bool { return g.open }

// With a hub, the promotion delay runs from the moment the last member
// applied the next CA, not only from its publication: that member's
// kubelets still have to refresh pods' projected bundles. If the gate
// closes again (a member joins), the clock starts over.
func TestPromotionWaitsAfterTheGateOpens(t *testing.T) {
	const delay = 5 * time.Minute
	g := &gate{}
	r := &Rotation{PromotionDelay: delay, Gate: g}
	next := testCA(t, "ca2-p256", signers.StateNext)
	next.AddedAt = t0
	pool := &signers.Pool{Signer: signers.SPIFFESignerName, CAs: []*signers.CA{testCA(t, "ca-p256", signers.StateActive), next}}

	step := func(p *signers.Pool, at time.Duration) (*signers.Pool, time.Duration) {
		t.Helper()
		out, requeue, _, err := r.step(p, "", SignerConfig{}, t0.Add(at))
		if err != nil {
			t.Fatalf("at +%v: %v", at, err)
		}
		return out, requeue
	}
	// Published 6 minutes ago, but the last member has not applied it.
	if out, _ := step(pool, 6*time.Minute); out != nil {
		t.Fatal("promoted or changed while the gate is closed")
	}
	// The last member applies it at +6m: the clock starts.
	g.open = true
	opened, requeue := step(pool, 6*time.Minute)
	if opened == nil || !opened.Next().DistributedAt.Equal(t0.Add(6*time.Minute)) || requeue != delay {
		t.Fatalf("gate opened at +6m: pool %v, requeue %v; want distributedAt stamped and a %v wait", opened, requeue, delay)
	}
	// Publication's delay is long past, the gate's is not.
	if out, requeue := step(opened, 10*time.Minute); out != nil || requeue != time.Minute {
		t.Fatalf("at +10m: pool %v, requeue %v; want no change for another minute", out, requeue)
	}
	// A member joins: the gate closes, and the clock is reset.
	g.open = false
	closed, _ := step(opened, 10*time.Minute)
	if closed == nil || !closed.Next().DistributedAt.IsZero() {
		t.Fatalf("gate closed again: pool %v; want distributedAt cleared", closed)
	}
	g.open = true
	reopened, _ := step(closed, 12*time.Minute)
	if out, _ := step(reopened, 16*time.Minute); out != nil {
		t.Fatal("promoted 4 minutes after the gate reopened")
	}
	promoted, _ := step(reopened, 17*time.Minute)
	if promoted == nil || promoted.Next() != nil {
		t.Fatalf("at +17m (the gate open for %v): pool %v; want the next CA promoted", delay, promoted)
	}
	if a, err := promoted.Active(); err != nil || !a.Certificate.Equal(next.Certificate) {
		t.Errorf("active CA after promotion: %v, %v", a, err)
	}

	// The time survives the pool's round trip through its Secret.
	data, err := opened.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := signers.UnmarshalPool(data)
	if err != nil || !back.Next().DistributedAt.Equal(t0.Add(6*time.Minute)) {
		t.Errorf("distributedAt after a round trip: %v, %v", back, err)
	}
}
