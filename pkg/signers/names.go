package signers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
)

// The signer names of DESIGN.md.
const (
	SPIFFESignerName     = "anchorage.dev/spiffe"
	ServiceDNSSignerName = "anchorage.dev/service-dns"
)

// SignerNames lists every signer anchorage runs, in a stable order.
func SignerNames() []string { return []string{SPIFFESignerName, ServiceDNSSignerName} }

// Slug is the signer's short name used in URLs and object names
// ("spiffe", "service-dns"): the part after the last slash.
func Slug(signerName string) string {
	return signerName[strings.LastIndex(signerName, "/")+1:]
}

// KeyType names a leaf key type exactly as the PodCertificateProjection
// keyType field does.
type KeyType string

// Every key type the 1.37 PodCertificateRequest API accepts.
const (
	KeyTypeRSA3072   KeyType = "RSA3072"
	KeyTypeRSA4096   KeyType = "RSA4096"
	KeyTypeECDSAP256 KeyType = "ECDSAP256"
	KeyTypeECDSAP384 KeyType = "ECDSAP384"
	KeyTypeECDSAP521 KeyType = "ECDSAP521"
	KeyTypeED25519   KeyType = "ED25519"
)

// AllKeyTypes returns every leaf key type the API allows, in the API's order.
func AllKeyTypes() []KeyType {
	return []KeyType{KeyTypeRSA3072, KeyTypeRSA4096, KeyTypeECDSAP256, KeyTypeECDSAP384, KeyTypeECDSAP521, KeyTypeED25519}
}

// ParseKeyTypes parses a list such as "ECDSAP256,ED25519".
func ParseKeyTypes(list []string) ([]KeyType, error) {
	out := make([]KeyType, 0, len(list))
	for _, s := range list {
		kt := KeyType(strings.TrimSpace(s))
		if !slices.Contains(AllKeyTypes(), kt) {
			return nil, fmt.Errorf("unknown key type %q: use one of %s", s, joinKeyTypes(AllKeyTypes()))
		}
		if !slices.Contains(out, kt) {
			out = append(out, kt)
		}
	}
	return out, nil
}

func joinKeyTypes(kts []KeyType) string {
	s := make([]string, len(kts))
	for i, kt := range kts {
		s[i] = string(kt)
	}
	return strings.Join(s, ", ")
}

// KeyTypeOf classifies a public key; keys outside AllKeyTypes are an error.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 3072:
			return KeyTypeRSA3072, nil
		case 4096:
			return KeyTypeRSA4096, nil
		}
		return "", fmt.Errorf("RSA key of %d bits is not supported", k.N.BitLen())
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyTypeECDSAP256, nil
		case elliptic.P384():
			return KeyTypeECDSAP384, nil
		case elliptic.P521():
			return KeyTypeECDSAP521, nil
		}
		return "", fmt.Errorf("ECDSA curve %s is not supported", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return KeyTypeED25519, nil
	}
	return "", fmt.Errorf("public key type %T is not supported", pub)
}

// KeyPolicy is the set of leaf key types a signer issues for.
type KeyPolicy []KeyType

// Check returns an error naming the supported types when pub is not allowed.
// Such a request can never succeed, so the caller denies it.
func (p KeyPolicy) Check(pub crypto.PublicKey) (KeyType, error) {
	kt, err := KeyTypeOf(pub)
	if err == nil && !slices.Contains(p, kt) {
		err = fmt.Errorf("key type %s is not allowed by this signer", kt)
	}
	if err != nil {
		return "", fmt.Errorf("%w; supported key types: %s", err, joinKeyTypes(p))
	}
	return kt, nil
}

// PublicKeyFromCSR returns the public key of a DER PKCS#10 request. Subject
// and extensions of the request are ignored on purpose: the apiserver already
// checked the self-signature (proof of possession), and everything else the
// certificate says comes from verified PodCertificateRequest fields.
func PublicKeyFromCSR(der []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parsing stubPKCS10Request: %w", err)
	}
	return csr.PublicKey, nil
}
