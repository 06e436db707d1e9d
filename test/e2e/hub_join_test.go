package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/anchorage-dev/anchorage/pkg/federation"
)

// A join token is single-use even when several joins present it at once:
// exactly one is recorded, with its JWKS; the others are refused (409
// while the token still exists, 401 once it is spent).
func TestHubJoinTokenSingleUseUnderConcurrency(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startHub(t, ctx)
	e.register("solo", "solo.example")
	token := e.joinToken("solo")

	const n = 8
	jwks := make([]json.RawMessage, n)
	for i := range jwks {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		jwks[i], _ = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: fmt.Sprintf("key-%d", i), Algorithm: "ES256", Use: "sig"}}})
	}
	cl := &federation.Client{HubURL: e.url, Cluster: "solo", HTTP: e.https}
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = cl.Join(ctx, federation.JoinRequest{Token: token, JWKS: jwks[i]})
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("joins %d and %d both succeeded with the same token", winner, i)
			}
			winner = i
		case federation.IsStatus(err, http.StatusConflict), federation.IsStatus(err, http.StatusUnauthorized):
		default:
			t.Errorf("join %d: %v, want success, 409 or 401", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no join succeeded: %v", errs)
	}
	var stored, want jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(e.member("solo").Status.JWKS), &stored); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(jwks[winner], &want); err != nil {
		t.Fatal(err)
	}
	if len(stored.Keys) != 1 || stored.Keys[0].KeyID != want.Keys[0].KeyID {
		t.Errorf("stored JWKS %s, want the winner's (kid %s)", e.member("solo").Status.JWKS, want.Keys[0].KeyID)
	}
}
