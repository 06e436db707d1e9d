package oidcbundle

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// claims are those of a projected service-account token of the agent,
// issued a minute before t0 for an hour.
func claims(change ...func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": eastIssuer,
		"sub": agentSub,
		"aud": []string{hubURL},
		"iat": t0.Add(-time.Minute).Unix(),
		"nbf": t0.Add(-time.Minute).Unix(),
		"exp": t0.Add(59 * time.Minute).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      "anchorage-system",
			"serviceaccount": map[string]any{"name": "member-agent", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "member-agent-0", "uid": "pod-uid"},
		},
	}
	for _, f := range change {
		f(c)
	}
	return c
}

func sign(t testing.TB, key crypto.Signer, alg jose.SignatureAlgorithm, kid string, c map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned builds a token with the given header and an empty or junk
// signature, as an attacker would.
func unsigned(header string, c map[string]any, sig string) string {
	p, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(p) + "." + sig
}

func TestVerifyAgentToken(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	rsaKey, ecKey, other := readKey(t, "token-rsa"), readKey(t, "token-ec"), readKey(t, "other-ec")

	// HS256 keyed with the RSA public key: the classic algorithm confusion.
	rsaPubDER, err := x509.MarshalPKIXPublicKey(rsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: rsaPubDER}, (&jose.SignerOptions{}).WithHeader("kid", kidRSA))
	if err != nil {
		t.Fatal(err)
	}
	hsPayload, _ := json.Marshal(claims())
	hsJWS, err := hs.Sign(hsPayload)
	if err != nil {
		t.Fatal(err)
	}
	hsToken, _ := hsJWS.CompactSerialize()

	const prefix = `agent token for cluster "east": `
	tests := []struct {
		name    string
		cluster string
		token   string
		check   error
		want    string // exact error; "" = accepted
	}{
		{name: "RSA", token: sign(t, rsaKey, jose.RS256, kidRSA, claims())},
		{name: "ECDSA", token: sign(t, ecKey, jose.ES256, kidEC, claims())},
		{name: "audience as a string", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["aud"] = hubURL }))},
		{name: "several audiences", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc", hubURL} }))},
		{name: "no kid", token: sign(t, ecKey, jose.ES256, "", claims())},
		{name: "nbf within go-oidc's 5 minute leeway", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["nbf"] = t0.Add(4 * time.Minute).Unix() }))},

		{name: "wrong audience", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} })),
			check: ErrWrongAudience, want: prefix + `wrong audience: the token's audience is ["https://kubernetes.default.svc"], the hub accepts only "https://hub.example"; set the agent's projected token audience to the hub URL`},
		{name: "expired", token: sign(t, rsaKey, jose.RS256, kidRSA, claims(func(c map[string]any) { c["exp"] = t0.Add(-time.Second).Unix() })),
			check: ErrExpired, want: prefix + `expired: the token expired at 2026-11-22T09:59:59Z (hub time 2026-11-22T10:00:00Z); the agent must re-read its projected token file, which the kubelet refreshes`},
		{name: "not yet valid", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["nbf"] = t0.Add(10 * time.Minute).Unix() })),
			check: ErrNotYetValid, want: prefix + `not yet valid: the token is valid from 2026-11-22T10:10:00Z, more than 5 minutes after hub time 2026-11-22T10:00:00Z; check the clocks`},
		{name: "wrong issuer", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["iss"] = "https://kubernetes.default.svc.cluster.local" })),
			check: ErrWrongIssuer, want: prefix + `wrong issuer: the token was issued by "https://kubernetes.default.svc.cluster.local", the member's issuer is "https://hub.example/clusters/east"; set the cluster's kube-apiserver --service-account-issuer to it`},
		{name: "another member's issuer", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["iss"] = westIssuer })),
			check: ErrWrongIssuer, want: prefix + `wrong issuer: the token was issued by "https://hub.example/clusters/west", the member's issuer is "https://hub.example/clusters/east"; set the cluster's kube-apiserver --service-account-issuer to it`},
		{name: "unknown kid", token: sign(t, other, jose.ES256, "other-key", claims()),
			check: ErrUnknownKey, want: prefix + `unknown key: key id "other-key" is not in the member's JWKS (ec-key, rsa-key); after a service-account key rotation the agent must report the new JWKS`},
		{name: "known kid, other key", token: sign(t, other, jose.ES256, kidEC, claims()),
			check: ErrBadSignature, want: prefix + `bad signature: the signature does not verify with key "ec-key"; the token was not signed by the member's apiserver`},
		{name: "no kid, other key", token: sign(t, other, jose.ES256, "", claims()),
			check: ErrBadSignature, want: prefix + `bad signature: the token has no kid and no key of the member verifies its signature`},
		{name: "wrong subject", token: sign(t, ecKey, jose.ES256, kidEC, claims(func(c map[string]any) { c["sub"] = "system:serviceaccount:default:default" })),
			check: ErrWrongSubject, want: prefix + `wrong subject: the token belongs to "system:serviceaccount:default:default"; only the member's agent service account "system:serviceaccount:anchorage-system:member-agent" may call the hub`},
		{name: "alg none", token: unsigned(`{"alg":"none","kid":"ec-key"}`, claims(), ""),
			check: ErrUnsupportedAlgorithm, want: prefix + `unsupported algorithm: the token is signed with "none" but key "ec-key" is for ES256`},
		{name: "alg none without kid", token: unsigned(`{"alg":"none"}`, claims(), ""),
			check: ErrUnsupportedAlgorithm, want: prefix + `unsupported algorithm: the token is signed with "none"; the member's keys use ES256, RS256`},
		{name: "HS256 with the public key as secret", token: hsToken,
			check: ErrUnsupportedAlgorithm, want: prefix + `unsupported algorithm: the token is signed with "HS256" but key "rsa-key" is for RS256`},
		{name: "HS256 without kid", token: unsigned(`{"alg":"HS256"}`, claims(), "AAAA"),
			check: ErrUnsupportedAlgorithm, want: prefix + `unsupported algorithm: the token is signed with "HS256"; the member's keys use ES256, RS256`},
		{name: "ES256 claimed for the RSA key", token: sign(t, ecKey, jose.ES256, kidRSA, claims()),
			check: ErrUnsupportedAlgorithm, want: prefix + `unsupported algorithm: the token is signed with "ES256" but key "rsa-key" is for RS256`},
		{name: "RS256 header, ES256 signature", token: func() string {
			// A valid ES256 token whose header is rewritten to RS256:
			// go-oidc verifies with the RSA key and fails.
			parts := strings.Split(sign(t, ecKey, jose.ES256, kidRSA, claims()), ".")
			return unsigned(`{"alg":"RS256","kid":"rsa-key"}`, claims(), parts[2])
		}(), check: ErrBadSignature, want: prefix + `bad signature: the signature does not verify with key "rsa-key"; the token was not signed by the member's apiserver`},
		{name: "garbage", token: "not-a-token",
			check: ErrMalformedToken, want: prefix + `malformed token: the token has 1 parts, a compact JWS has 3; send the projected service-account token as it is`},
		{name: "header not JSON", token: base64.RawURLEncoding.EncodeToString([]byte("alg")) + ".e30.e30", check: ErrMalformedToken,
			want: prefix + `malformed token: the token header is not JSON: invalid character 'a' looking for beginning of value; send the projected service-account token as it is`},
		{name: "header not base64url", token: "e30=.e30.e30", check: ErrMalformedToken,
			want: prefix + `malformed token: the token header is not base64url: illegal base64 data at input byte 3; send the projected service-account token as it is`},
		{name: "oversized", token: strings.Repeat("a", 20000), check: ErrMalformedToken,
			want: prefix + `malformed token: the token is 20000 bytes, over the limit of 16384; send the projected service-account token as it is`},
		{name: "no alg", token: unsigned(`{"kid":"ec-key"}`, claims(), "AAAA"), check: ErrMalformedToken,
			want: prefix + `malformed token: the token header has no "alg"; send the projected service-account token as it is`},

		{name: "unknown cluster", cluster: "north", token: sign(t, ecKey, jose.ES256, kidEC, claims()),
			check: ErrUnknownCluster, want: `unknown cluster: "north" is not a member of this hub`},
		{name: "another member's path", cluster: "west", token: sign(t, ecKey, jose.ES256, kidEC, claims()),
			check: ErrUnknownKey, want: `agent token for cluster "west": unknown key: the member has not reported its service-account JWKS; the agent sends it when it reports`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cluster := tc.cluster
			if cluster == "" {
				cluster = "east"
			}
			got, err := s.VerifyAgentToken(ctx, cluster, tc.token)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if got.Subject != agentSub || got.Issuer != eastIssuer || got.Namespace != "anchorage-system" ||
					got.ServiceAccountName != "member-agent" || got.ServiceAccountUID != "sa-uid" || got.PodName != "member-agent-0" || got.PodUID != "pod-uid" ||
					!got.Expiry.Equal(t0.Add(59*time.Minute)) || !got.IssuedAt.Equal(t0.Add(-time.Minute)) {
					t.Errorf("claims %+v", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
			if !errors.Is(err, tc.check) {
				t.Errorf("errors.Is(err, %v) is false", tc.check)
			}
			if tc.check == ErrExpired {
				var expired *oidc.TokenExpiredError
				if !errors.As(err, &expired) {
					t.Errorf("go-oidc's TokenExpiredError is not in the chain")
				}
			}
		})
	}
}

// TestVerifyKeyID: the kid selects the key, and the key that verified is
// reported.
func TestVerifyKeyID(t *testing.T) {
	s := newTestStore(t)
	c, err := s.VerifyAgentToken(context.Background(), "east", sign(t, readKey(t, "token-rsa"), jose.RS256, kidRSA, claims()))
	if err != nil || c.KeyID != kidRSA {
		t.Fatalf("%+v %v", c, err)
	}
	if strings.Join(c.Audience, ",") != hubURL {
		t.Errorf("audience %v", c.Audience)
	}
}

// TestVerifyCustomServiceAccount: a member naming another agent account.
func TestVerifyCustomServiceAccount(t *testing.T) {
	s := newTestStore(t)
	m := eastMember(t)
	m.AgentServiceAccount = "platform/anchorage"
	if err := s.SetMember(m); err != nil {
		t.Fatal(err)
	}
	ec := readKey(t, "token-ec")
	if _, err := s.VerifyAgentToken(context.Background(), "east", sign(t, ec, jose.ES256, kidEC, claims())); !errors.Is(err, ErrWrongSubject) {
		t.Errorf("default account accepted: %v", err)
	}
	tok := sign(t, ec, jose.ES256, kidEC, claims(func(c map[string]any) { c["sub"] = "system:serviceaccount:platform:anchorage" }))
	if _, err := s.VerifyAgentToken(context.Background(), "east", tok); err != nil {
		t.Errorf("rejected: %v", err)
	}
}

// TestVerifyKeyRotation: after SetMember with the new JWKS, tokens of the
// removed key fail as unknown, tokens of the new key pass.
func TestVerifyKeyRotation(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	oldTok := sign(t, readKey(t, "token-rsa"), jose.RS256, kidRSA, claims())
	newTok := sign(t, readKey(t, "other-ec"), jose.ES256, "new-key", claims())

	m := eastMember(t)
	keys, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: readKey(t, "other-ec").Public(), KeyID: "new-key", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	m.JWKS = keys
	if err := s.SetMember(m); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAgentToken(ctx, "east", oldTok); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old key: %v", err)
	}
	if _, err := s.VerifyAgentToken(ctx, "east", newTok); err != nil {
		t.Errorf("new key: %v", err)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	keys, err := ParseJWKS(eastJWKS(t))
	if err != nil {
		t.Fatal(err)
	}
	unnormalised := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: readKey(t, "token-ec").Public(), KeyID: "x"}}}
	base := VerifierConfig{Audience: hubURL, Issuer: eastIssuer, Keys: keys, AgentServiceAccount: DefaultAgentServiceAccount}
	for _, tc := range []struct {
		name   string
		change func(*VerifierConfig)
		want   string
	}{
		{"no audience", func(c *VerifierConfig) { c.Audience = "" }, "token verifier: audience and issuer are required"},
		{"no issuer", func(c *VerifierConfig) { c.Issuer = "" }, "token verifier: audience and issuer are required"},
		{"bad account", func(c *VerifierConfig) { c.AgentServiceAccount = "a:b/c" }, `agent service account "a:b/c": want namespace/name`},
		{"account with colon", func(c *VerifierConfig) { c.AgentServiceAccount = "ns/a:b" }, `agent service account "ns/a:b": want namespace/name`},
		{"keys not from ParseJWKS", func(c *VerifierConfig) { c.Keys = unnormalised }, `token verifier: key "x" is not a normalised public key; use ParseJWKS`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.change(&cfg)
			if _, err := NewVerifier(cfg); errString(err) != tc.want {
				t.Errorf("error %v, want %s", err, tc.want)
			}
		})
	}
	// A standalone verifier works like the store's.
	v, err := NewVerifier(VerifierConfig{Audience: hubURL, Issuer: eastIssuer, Keys: keys, AgentServiceAccount: DefaultAgentServiceAccount, Clock: fixedClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), sign(t, readKey(t, "token-ec"), jose.ES256, kidEC, claims())); err != nil {
		t.Errorf("standalone verifier: %v", err)
	}
}
