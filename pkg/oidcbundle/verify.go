package oidcbundle

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// The checks an agent token can fail. A *TokenError matches exactly one of
// them with errors.Is.
var (
	ErrMalformedToken       = errors.New("malformed token")
	ErrUnsupportedAlgorithm = errors.New("unsupported algorithm")
	ErrUnknownKey           = errors.New("unknown key")
	ErrBadSignature         = errors.New("bad signature")
	ErrWrongIssuer          = errors.New("wrong issuer")
	ErrWrongAudience        = errors.New("wrong audience")
	ErrExpired              = errors.New("expired")
	ErrNotYetValid          = errors.New("not yet valid")
	ErrWrongSubject         = errors.New("wrong subject")
	// ErrUnknownCluster: Store.VerifyAgentToken for a cluster the hub does
	// not serve.
	ErrUnknownCluster = errors.New("unknown cluster")
)

// TokenError says which check an agent's token failed and what to do about
// it; the hub returns the message to the agent, whose operator reads it.
type TokenError struct {
	// Check is one of the Err* values above.
	Check error
	// Detail is the human part of the message.
	Detail string
	// Cause is go-oidc's or go-jose's own error, if any (for example an
	// *oidc.TokenExpiredError).
	Cause error
}

func (e *TokenError) Error() string { return e.Check.Error() + ": " + e.Detail }

// Unwrap exposes both the check and the library's error to errors.Is/As.
func (e *TokenError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Check}
	}
	return []error{e.Check, e.Cause}
}

// VerifierConfig is what a Verifier checks a token against.
type VerifierConfig struct {
	// Audience: the hub's external URL; agent tokens must name it in aud.
	Audience string
	// Issuer: the member's issuer, <hub URL>/clusters/<cluster>.
	Issuer string
	// Keys: the member's JWKS, as returned by ParseJWKS.
	Keys *jose.JSONWebKeySet
	// AgentServiceAccount: "namespace/name" of the member's agent.
	AgentServiceAccount string
	// Clock checks expiry; nil means the real clock.
	Clock signers.Clock
}

// Verifier checks a member agent's projected service-account token with
// go-oidc against the member's stored JWKS: signature, issuer, audience
// (the hub URL), expiry, then the subject (the member's agent
// ServiceAccount). It is safe for concurrent use.
//
// Keys are selected by the token's kid: each kid has its own go-oidc
// verifier whose StaticKeySet holds that one key and whose
// SupportedSigningAlgs is that key's algorithm. go-oidc's StaticKeySet
// alone would try every key and could not tell "unknown key" from "bad
// signature", and an explicit algorithm per key means a token can never
// choose how its signature is checked (no "none", no HS256 with a public key
// as the secret, no RS256/PS256 swap).
type Verifier struct {
	issuer   string
	audience string
	subject  string
	now      func() time.Time
	byKid    map[string]keyVerifier
	anyKey   *oidc.IDTokenVerifier // tokens without kid
	algs     []string
}

type keyVerifier struct {
	key      jose.JSONWebKey
	verifier *oidc.IDTokenVerifier
}

// NewVerifier builds a Verifier. The key set must come from ParseJWKS
// (public keys, kid and alg set); an empty set rejects every token.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Audience == "" || cfg.Issuer == "" {
		return nil, errors.New("token verifier: audience and issuer are required")
	}
	ns, name, ok := strings.Cut(cfg.AgentServiceAccount, "/")
	if !ok || !isDNSLabel(ns) || name == "" || strings.ContainsAny(name, "/:") {
		return nil, fmt.Errorf("agent service account %q: want namespace/name", cfg.AgentServiceAccount)
	}
	v := &Verifier{
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		subject:  "system:serviceaccount:" + ns + ":" + name,
		now:      time.Now,
		byKid:    map[string]keyVerifier{},
	}
	if cfg.Clock != nil {
		v.now = cfg.Clock.Now
	}
	var all []crypto.PublicKey
	if cfg.Keys != nil {
		for _, k := range cfg.Keys.Keys {
			if k.KeyID == "" || k.Algorithm == "" || !k.IsPublic() {
				return nil, fmt.Errorf("token verifier: key %q is not a normalised public key; use ParseJWKS", k.KeyID)
			}
			v.byKid[k.KeyID] = keyVerifier{key: k, verifier: oidc.NewVerifier(cfg.Issuer,
				&oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{k.Key}},
				v.oidcConfig([]string{k.Algorithm}))}
			all = append(all, k.Key)
			if !slices.Contains(v.algs, k.Algorithm) {
				v.algs = append(v.algs, k.Algorithm)
			}
		}
	}
	slices.Sort(v.algs)
	if len(all) > 0 {
		v.anyKey = oidc.NewVerifier(cfg.Issuer, &oidc.StaticKeySet{PublicKeys: all}, v.oidcConfig(v.algs))
	}
	return v, nil
}

func (v *Verifier) oidcConfig(algs []string) *oidc.Config {
	return &oidc.Config{ClientID: v.audience, SupportedSigningAlgs: algs, Now: v.now}
}

// AgentClaims are the verified claims of an agent token.
type AgentClaims struct {
	Issuer   string
	Subject  string
	Audience []string
	IssuedAt time.Time
	Expiry   time.Time
	// KeyID is the kid of the key that verified the token; empty for a
	// token without kid (verified by trying every key of the member).
	KeyID string
	// From the "kubernetes.io" claim; empty when the token has none.
	Namespace          string
	ServiceAccountName string
	ServiceAccountUID  string
	PodName            string
	PodUID             string
}

// header is the JOSE header, read before verification only to pick the
// key and to name the problem; nothing in it is trusted.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// Verify checks rawToken and returns its claims, or a *TokenError.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (*AgentClaims, error) {
	h, err := parseHeader(rawToken)
	if err != nil {
		return nil, &TokenError{Check: ErrMalformedToken, Detail: err.Error() + "; send the projected service-account token as it is", Cause: err}
	}
	if len(v.byKid) == 0 {
		return nil, &TokenError{Check: ErrUnknownKey, Detail: "the member has not reported its service-account JWKS; the agent sends it when it reports"}
	}
	// The kid is looked up before the algorithm is judged: after a key
	// rotation "unknown key" is the message that tells the operator what
	// to do.
	verifier, kid := v.anyKey, h.Kid
	var key *jose.JSONWebKey
	if kid != "" {
		kv, ok := v.byKid[kid]
		if !ok {
			return nil, &TokenError{Check: ErrUnknownKey, Detail: fmt.Sprintf("key id %q is not in the member's JWKS (%s); after a service-account key rotation the agent must report the new JWKS", kid, strings.Join(slices.Sorted(maps.Keys(v.byKid)), ", "))}
		}
		if kv.key.Algorithm != h.Alg {
			return nil, &TokenError{Check: ErrUnsupportedAlgorithm, Detail: fmt.Sprintf("the token is signed with %q but key %q is for %s", h.Alg, kid, kv.key.Algorithm)}
		}
		verifier, key = kv.verifier, &kv.key
	} else if !slices.Contains(v.algs, h.Alg) {
		return nil, &TokenError{Check: ErrUnsupportedAlgorithm, Detail: fmt.Sprintf("the token is signed with %q; the member's keys use %s", h.Alg, strings.Join(v.algs, ", "))}
	}

	tok, err := verifier.Verify(ctx, rawToken)
	if err != nil {
		return nil, v.explain(rawToken, h, key, err)
	}
	if tok.Subject != v.subject {
		return nil, &TokenError{Check: ErrWrongSubject, Detail: fmt.Sprintf("the token belongs to %q; only the member's agent service account %q may call the hub", tok.Subject, v.subject)}
	}
	c := &AgentClaims{
		Issuer:   tok.Issuer,
		Subject:  tok.Subject,
		Audience: tok.Audience,
		IssuedAt: tok.IssuedAt,
		Expiry:   tok.Expiry,
		KeyID:    kid,
	}
	var k8s struct {
		K8s struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"serviceaccount"`
			Pod struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"pod"`
		} `json:"kubernetes.io"`
	}
	if err := tok.Claims(&k8s); err != nil {
		return nil, &TokenError{Check: ErrMalformedToken, Detail: "the kubernetes.io claim does not decode", Cause: err}
	}
	c.Namespace, c.ServiceAccountName, c.ServiceAccountUID = k8s.K8s.Namespace, k8s.K8s.ServiceAccount.Name, k8s.K8s.ServiceAccount.UID
	c.PodName, c.PodUID = k8s.K8s.Pod.Name, k8s.K8s.Pod.UID
	return c, nil
}

// explain turns a go-oidc failure into the check that failed. go-oidc
// reports most checks as plain strings, so instead of matching its messages
// the same checks are redone, in go-oidc's order, on the token; go-oidc has
// already rejected it, this only picks the words.
func (v *Verifier) explain(rawToken string, h header, key *jose.JSONWebKey, cause error) error {
	var expired *oidc.TokenExpiredError
	if errors.As(cause, &expired) {
		return &TokenError{Check: ErrExpired, Detail: fmt.Sprintf("the token expired at %s (hub time %s); the agent must re-read its projected token file, which the kubelet refreshes", expired.Expiry.UTC().Format(time.RFC3339), v.now().UTC().Format(time.RFC3339)), Cause: cause}
	}
	jws, err := jose.ParseSigned(rawToken, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(h.Alg)})
	if err != nil {
		return &TokenError{Check: ErrMalformedToken, Detail: "the token is not a valid JWS", Cause: cause}
	}
	candidates := []jose.JSONWebKey{}
	if key != nil {
		candidates = append(candidates, *key)
	} else {
		for _, kv := range v.byKid {
			if kv.key.Algorithm == h.Alg {
				candidates = append(candidates, kv.key)
			}
		}
	}
	var payload []byte
	for _, k := range candidates {
		if payload, err = jws.Verify(k.Key); err == nil {
			break
		}
	}
	if payload == nil {
		detail := fmt.Sprintf("the signature does not verify with key %q; the token was not signed by the member's apiserver", h.Kid)
		if key == nil {
			detail = "the token has no kid and no key of the member verifies its signature"
		}
		return &TokenError{Check: ErrBadSignature, Detail: detail, Cause: cause}
	}
	var claims struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Nbf *jsonTime       `json:"nbf"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return &TokenError{Check: ErrMalformedToken, Detail: "the claims are not a JSON object", Cause: cause}
	}
	switch {
	case claims.Iss != v.issuer:
		return &TokenError{Check: ErrWrongIssuer, Detail: fmt.Sprintf("the token was issued by %q, the member's issuer is %q; set the cluster's kube-apiserver --service-account-issuer to it", claims.Iss, v.issuer), Cause: cause}
	case !audienceContains(claims.Aud, v.audience):
		return &TokenError{Check: ErrWrongAudience, Detail: fmt.Sprintf("the token's audience is %s, the hub accepts only %q; set the agent's projected token audience to the hub URL", string(claims.Aud), v.audience), Cause: cause}
	case claims.Nbf != nil && time.Time(*claims.Nbf).After(v.now().Add(nbfLeeway)):
		return &TokenError{Check: ErrNotYetValid, Detail: fmt.Sprintf("the token is valid from %s, more than 5 minutes after hub time %s; check the clocks", time.Time(*claims.Nbf).UTC().Format(time.RFC3339), v.now().UTC().Format(time.RFC3339)), Cause: cause}
	}
	return &TokenError{Check: ErrMalformedToken, Detail: "go-oidc rejected the token", Cause: cause}
}

// nbfLeeway is go-oidc's fixed allowance for clock skew on nbf.
const nbfLeeway = 5 * time.Minute

func audienceContains(raw json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(raw, &many) == nil && slices.Contains(many, want)
}

type jsonTime time.Time

func (t *jsonTime) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	f, err := n.Float64()
	if err != nil {
		return err
	}
	*t = jsonTime(time.Unix(int64(f), 0))
	return nil
}

// maxTokenBytes bounds the work done on a token before its signature is
// checked; projected service-account tokens are one or two KiB.
const maxTokenBytes = 16 << 10

// parseHeader decodes the protected header of a compact JWS.
func parseHeader(raw string) (header, error) {
	var h header
	if len(raw) > maxTokenBytes {
		return h, fmt.Errorf("the token is %d bytes, over the limit of %d", len(raw), maxTokenBytes)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return h, fmt.Errorf("the token has %d parts, a compact JWS has 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return h, fmt.Errorf("the token header is not base64url: %w", err)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("the token header is not JSON: %w", err)
	}
	if h.Alg == "" {
		return h, errors.New(`the token header has no "alg"`)
	}
	return h, nil
}
