package oidcbundle

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func jwk(t *testing.T, k jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func set(keys ...string) []byte { return []byte(`{"keys":[` + strings.Join(keys, ",") + `]}`) }

func TestParseJWKSRejects(t *testing.T) {
	ecPriv := readKey(t, "token-ec").(*ecdsa.PrivateKey)
	rsaPriv := readKey(t, "token-rsa").(*rsa.PrivateKey)
	ec := jwk(t, jose.JSONWebKey{Key: ecPriv.Public(), KeyID: "ec", Algorithm: "ES256", Use: "sig"})
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tooMany := make([]string, MaxJWKSKeys+1)
	for i := range tooMany {
		tooMany[i] = jwk(t, jose.JSONWebKey{Key: ecPriv.Public(), KeyID: fmt.Sprint(i)})
	}

	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"garbage", []byte("not json"), "JWKS: not a JSON object"},
		{"not an object", []byte(`[]`), "JWKS: not a JSON object"},
		{"truncated", []byte(`{"keys":[`), "JWKS: not a JSON Web Key Set: unexpected end of JSON input"},
		{"no keys member", []byte(`{"key":[]}`), `JWKS: the "keys" member is missing`},
		{"oversized", append(set(ec), make([]byte, MaxJWKSBytes)...), fmt.Sprintf("JWKS: %d bytes is over the limit of 65536", len(set(ec))+MaxJWKSBytes)},
		{"too many keys", set(tooMany...), "JWKS: 33 keys is over the limit of 32"},
		{"key not an object", set(`"x"`), "JWKS: key 0: not a JSON object"},
		{"kid not a string", set(`{"kty":"EC","kid":7}`), "JWKS: key 0: malformed key: json: cannot unmarshal number into Go struct field probeKey.kid of type string"},
		{"EC private key", set(jwk(t, jose.JSONWebKey{Key: ecPriv, KeyID: "ec", Algorithm: "ES256"})),
			`JWKS: key 0: kid "ec" contains private key material ("d"); publish the public key only`},
		{"RSA private key", set(ec, jwk(t, jose.JSONWebKey{Key: rsaPriv, KeyID: "rsa"})),
			`JWKS: key 1: kid "rsa" contains private key material ("d"); publish the public key only`},
		{"symmetric key", set(jwk(t, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac", Algorithm: "HS256"})),
			`JWKS: key 0: kid "hmac" is a symmetric (oct) key; only public keys may be published`},
		{"no kid", set(jwk(t, jose.JSONWebKey{Key: ecPriv.Public(), Algorithm: "ES256"})),
			`JWKS: key 0: no "kid": Kubernetes names every service-account key, and the hub selects keys by kid`},
		{"empty kid", set(`{"kty":"EC","kid":"","crv":"P-256","x":"AA","y":"AA"}`),
			`JWKS: key 0: no "kid": Kubernetes names every service-account key, and the hub selects keys by kid`},
		{"duplicate kid", set(ec, jwk(t, jose.JSONWebKey{Key: rsaPriv.Public(), KeyID: "ec", Algorithm: "RS256"})),
			`JWKS: key 1: kid "ec" is also the kid of key 0`},
		{"duplicate key", set(ec, jwk(t, jose.JSONWebKey{Key: ecPriv.Public(), KeyID: "ec2", Algorithm: "ES256"})),
			`JWKS: key 1 (kid "ec2") is the same public key as key 0`},
		{"no kty", set(`{"kid":"x","n":"AQAB","e":"AQAB"}`), `JWKS: key 0: kid "x" has no "kty"`},
		{"unknown kty", set(`{"kty":"AKP","kid":"mldsa","alg":"ML-DSA-44","pub":"AAAA"}`),
			`JWKS: key 0: kid "mldsa": key type "AKP" (crv "") is not supported; use RSA, EC P-256/P-384/P-521 or Ed25519`},
		{"X25519", set(`{"kty":"OKP","kid":"x","crv":"X25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`),
			`JWKS: key 0: kid "x": key type "OKP" (crv "X25519") is not supported; use RSA, EC P-256/P-384/P-521 or Ed25519`},
		{"encryption key", set(jwk(t, jose.JSONWebKey{Key: ecPriv.Public(), KeyID: "enc", Use: "enc"})),
			`JWKS: key 0: kid "enc" has use "enc"; service-account keys are signing keys ("sig")`},
		{"unsupported alg", set(jwk(t, jose.JSONWebKey{Key: rsaPriv.Public(), KeyID: "r", Algorithm: "RSA-OAEP"})),
			`JWKS: key 0: kid "r": algorithm "RSA-OAEP" is not supported; use one of [EdDSA ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512]`},
		{"alg none", set(jwk(t, jose.JSONWebKey{Key: rsaPriv.Public(), KeyID: "r", Algorithm: "none"})),
			`JWKS: key 0: kid "r": algorithm "none" is not supported; use one of [EdDSA ES256 ES384 ES512 PS256 PS384 PS512 RS256 RS384 RS512]`},
		{"alg for another key type", set(jwk(t, jose.JSONWebKey{Key: ecPriv.Public(), KeyID: "e", Algorithm: "RS256"})),
			`JWKS: key 0: kid "e": algorithm "RS256" does not fit this key ([ES256])`},
		{"alg for another curve", set(jwk(t, jose.JSONWebKey{Key: p384.Public(), KeyID: "e", Algorithm: "ES256"})),
			`JWKS: key 0: kid "e": algorithm "ES256" does not fit this key ([ES384])`},
		{"small RSA", set(jwk(t, jose.JSONWebKey{Key: small.Public(), KeyID: "small", Algorithm: "RS256"})),
			`JWKS: key 0: kid "small": RSA key of 1024 bits is too small (at least 2048)`},
		{"point not on curve", set(`{"kty":"EC","kid":"bad","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`),
			`JWKS: key 0: kid "bad": go-jose/go-jose: invalid EC key, X/Y are not on declared curve`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseJWKS(tc.in)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

// TestParseJWKSNormalises: what kube-apiserver serves is accepted; the
// result is public keys with kid, alg and use "sig", sorted by kid.
func TestParseJWKSNormalises(t *testing.T) {
	ec := readKey(t, "token-ec").Public()
	rsaPub := readKey(t, "token-rsa").Public()
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	in := set(
		jwk(t, jose.JSONWebKey{Key: rsaPub, KeyID: "b-rsa"}), // no alg: RS256, as kube uses
		jwk(t, jose.JSONWebKey{Key: ec, KeyID: "a-ec", Use: "sig", Algorithm: "ES256"}),
		jwk(t, jose.JSONWebKey{Key: edPub, KeyID: "c-ed"}),
	)
	got, err := ParseJWKS(in)
	if err != nil {
		t.Fatal(err)
	}
	var kids, algs, uses []string
	for _, k := range got.Keys {
		kids, algs, uses = append(kids, k.KeyID), append(algs, k.Algorithm), append(uses, k.Use)
		if !k.IsPublic() {
			t.Errorf("%s is not public", k.KeyID)
		}
	}
	if fmt.Sprint(kids, algs, uses) != "[a-ec b-rsa c-ed] [ES256 RS256 EdDSA] [sig sig sig]" {
		t.Errorf("normalised to %v %v %v", kids, algs, uses)
	}
	// Same keys in another order: the same canonical bytes.
	again, err := ParseJWKS(set(
		jwk(t, jose.JSONWebKey{Key: edPub, KeyID: "c-ed"}),
		jwk(t, jose.JSONWebKey{Key: ec, KeyID: "a-ec", Use: "sig", Algorithm: "ES256"}),
		jwk(t, jose.JSONWebKey{Key: rsaPub, KeyID: "b-rsa", Algorithm: "RS256"}),
	))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := marshalJWKS(got)
	b, _ := marshalJWKS(again)
	if string(a) != string(b) {
		t.Errorf("canonical forms differ:\n%s\n%s", a, b)
	}
	empty, err := ParseJWKS([]byte(`{"keys":[]}`))
	if err != nil || len(empty.Keys) != 0 {
		t.Errorf("empty set: %v %v", empty, err)
	}
	if b, _ := marshalJWKS(empty); string(b) != `{"keys":[]}` {
		t.Errorf("empty set marshals to %s", b)
	}
}
