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
