package members

import (
	"crypto/x509"
	"sync"

	"github.com/go-logr/logr"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// anchorCache parses reported anchors once per distinct PEM: every change
// re-reads a thousand members whose anchors mostly did not change.
// Entries not used in a round are dropped at the next round's end.
type anchorCache struct {
	mu         sync.Mutex
	prev, used map[string][]*x509.Certificate
}

// anchors returns mc's reported anchors per signer, skipping (and logging)
// those that do not parse.
func (c *anchorCache) anchors(log logr.Logger, mc *hubv1.MemberCluster) map[string][]*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used == nil {
		c.used = map[string][]*x509.Certificate{}
	}
	out := map[string][]*x509.Certificate{}
	for _, a := range mc.Status.Anchors {
		certs, ok := c.used[a.PEM]
		if !ok {
			certs, ok = c.prev[a.PEM]
		}
		if !ok {
			var err error
			if certs, err = signers.ParseCertificatesPEM([]byte(a.PEM)); err != nil {
				log.Error(err, "skipping unparsable anchors in status", "member", mc.Name, "signer", a.Signer)
				continue
			}
		}
		c.used[a.PEM] = certs
		out[a.Signer] = certs
	}
	return out
}

// endRound forgets what this round did not use.
func (c *anchorCache) endRound() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prev, c.used = c.used, nil
}
