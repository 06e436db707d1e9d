package oidcbundle

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/go-jose/go-jose/v4"
)

// Limits on a member's service-account JWKS. A kube-apiserver publishes one
// key per --service-account-key-file entry (a handful during a rotation), so
// these only stop an agent from making the hub store and serve megabytes.
const (
	MaxJWKSBytes = 64 << 10
	MaxJWKSKeys  = 32
)

// minRSABits: kube-apiserver refuses smaller signing keys too, and go-jose
// would happily verify with a 512-bit key.
const minRSABits = 2048

// SupportedAlgorithms are the JWS algorithms a member's keys may declare:
// exactly go-oidc's allowlist, so that every key the hub serves can also
// verify tokens in go-oidc. Kubernetes itself uses RS256 and ES256/384/512.
func SupportedAlgorithms() []string {
	return []string{"EdDSA", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}
}

// probeKey reads the members of a JWK that decide whether it is acceptable
// before go-jose parses it, so that the error can name the problem (go-jose
// would parse a private key without complaint and fail an unknown kty with a
// generic message).
type probeKey struct {
	Kty string          `json:"kty"`
	Kid *string         `json:"kid"`
	Alg string          `json:"alg"`
	Use string          `json:"use"`
	D   json.RawMessage `json:"d"`
	Crv string          `json:"crv"`
}

// ParseJWKS validates a member's service-account JWKS (what its
// kube-apiserver serves at /openid/v1/jwks, reported by the agent) and
// returns it normalised: public signing keys only, each with its kid, its
// alg (filled in from the key type when absent) and use "sig", sorted by kid.
// Certificates and other members of the input are dropped.
//
// It rejects, with an error naming the key: private or symmetric keys, keys
// without kid, duplicate kids or key material, unknown key types, algorithms
// outside SupportedAlgorithms or not matching the key, RSA keys under 2048
// bits, use other than "sig", more than MaxJWKSKeys keys and inputs over
// MaxJWKSBytes. An empty set ({"keys":[]}) is valid: a member that has not
// reported keys yet.
func ParseJWKS(data []byte) (*jose.JSONWebKeySet, error) {
	if len(data) > MaxJWKSBytes {
		return nil, fmt.Errorf("JWKS: %d bytes is over the limit of %d", len(data), MaxJWKSBytes)
	}
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if !isJSONObject(data) {
		return nil, errors.New("JWKS: not a JSON object")
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: not a JSON Web Key Set: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS: the "keys" member is missing`)
	}
	raw := *doc.Keys
	if len(raw) > MaxJWKSKeys {
		return nil, fmt.Errorf("JWKS: %d keys is over the limit of %d", len(raw), MaxJWKSKeys)
	}
	out := &jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(raw))}
	kids := map[string]int{}
	thumbprints := map[string]int{}
	for i, r := range raw {
		k, err := parseJWK(r)
		if err != nil {
			return nil, fmt.Errorf("JWKS: key %d: %w", i, err)
		}
		if j, dup := kids[k.KeyID]; dup {
			return nil, fmt.Errorf("JWKS: key %d: kid %q is also the kid of key %d", i, k.KeyID, j)
		}
		kids[k.KeyID] = i
		tp, err := k.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("JWKS: key %d (kid %q): %w", i, k.KeyID, err)
		}
		if j, dup := thumbprints[string(tp)]; dup {
			return nil, fmt.Errorf("JWKS: key %d (kid %q) is the same public key as key %d", i, k.KeyID, j)
		}
		thumbprints[string(tp)] = i
		out.Keys = append(out.Keys, k)
	}
	// Sorted so that the same keys always serialise to the same bytes (and
	// ETag), whatever order the apiserver listed them in.
	slices.SortFunc(out.Keys, func(a, b jose.JSONWebKey) int { return cmp.Compare(a.KeyID, b.KeyID) })
	return out, nil
}

func parseJWK(r json.RawMessage) (jose.JSONWebKey, error) {
	var p probeKey
	if !isJSONObject(r) {
		return jose.JSONWebKey{}, errors.New("not a JSON object")
	}
	if err := json.Unmarshal(r, &p); err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("malformed key: %w", err)
	}
	switch {
	case p.Kid == nil || *p.Kid == "":
		return jose.JSONWebKey{}, errors.New(`no "kid": Kubernetes names every service-account key, and the hub selects keys by kid`)
	case p.Kty == "oct":
		return jose.JSONWebKey{}, fmt.Errorf("kid %q is a symmetric (oct) key; only public keys may be published", *p.Kid)
	case p.D != nil:
		// Checked before go-jose parses the key: the message must not
		// depend on whether the rest of a leaked key happens to parse.
		return jose.JSONWebKey{}, fmt.Errorf("kid %q contains private key material (\"d\"); publish the public key only", *p.Kid)
	case p.Kty == "":
		return jose.JSONWebKey{}, fmt.Errorf("kid %q has no \"kty\"", *p.Kid)
	case p.Use != "" && p.Use != "sig":
		return jose.JSONWebKey{}, fmt.Errorf("kid %q has use %q; service-account keys are signing keys (\"sig\")", *p.Kid, p.Use)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(r); err != nil {
		if errors.Is(err, jose.ErrUnsupportedKeyType) {
			return jose.JSONWebKey{}, fmt.Errorf("kid %q: key type %q (crv %q) is not supported; use RSA, EC P-256/P-384/P-521 or Ed25519", *p.Kid, p.Kty, p.Crv)
		}
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w", *p.Kid, err)
	}
	if !k.IsPublic() || !k.Valid() {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q is not a valid public key", k.KeyID)
	}
	alg, err := algorithmFor(k.Key, k.Algorithm)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w", k.KeyID, err)
	}
	return jose.JSONWebKey{Key: k.Key, KeyID: k.KeyID, Algorithm: alg, Use: "sig"}, nil
}

// isJSONObject tells an object from other JSON values up front, so that the
// error does not quote encoding/json's Go type names.
func isJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// algorithmFor checks that alg can be used with pub and returns it, or the
// algorithm kube-apiserver uses for such a key when alg is empty.
func algorithmFor(pub crypto.PublicKey, alg string) (string, error) {
	var allowed []string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return "", fmt.Errorf("RSA key of %d bits is too small (at least %d)", n, minRSABits)
		}
		allowed = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			allowed = []string{"ES256"}
		case elliptic.P384():
			allowed = []string{"ES384"}
		case elliptic.P521():
			allowed = []string{"ES512"}
		default:
			return "", fmt.Errorf("EC curve %s is not supported", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		allowed = []string{"EdDSA"}
	default:
		return "", fmt.Errorf("key type %T is not supported", pub)
	}
	if alg == "" {
		return allowed[0], nil
	}
	if !slices.Contains(SupportedAlgorithms(), alg) {
		return "", fmt.Errorf("algorithm %q is not supported; use one of %v", alg, SupportedAlgorithms())
	}
	if !slices.Contains(allowed, alg) {
		return "", fmt.Errorf("algorithm %q does not fit this key (%v)", alg, allowed)
	}
	return alg, nil
}

// marshalJWKS is the canonical form served at <issuer>/openid/v1/jwks.
func marshalJWKS(set *jose.JSONWebKeySet) ([]byte, error) {
	keys := set.Keys
	if keys == nil {
		keys = []jose.JSONWebKey{} // "keys":[] rather than null
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		return nil, fmt.Errorf("encoding JWKS: %w", err)
	}
	return b, nil
}

// algorithms lists the distinct algorithms of a normalised key set, sorted.
func algorithms(set *jose.JSONWebKeySet) []string {
	out := []string{}
	for _, k := range set.Keys {
		if !slices.Contains(out, k.Algorithm) {
			out = append(out, k.Algorithm)
		}
	}
	slices.Sort(out)
	return out
}
