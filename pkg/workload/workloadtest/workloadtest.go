// Package workloadtest makes what a workload's tests need: cluster CAs from
// pkg/signers and credential bundles laid out as the kubelet writes them.
// Like net/http/httptest, it is for tests only.
package workloadtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// CA is a cluster CA: a pool of one active CA of a signer profile.
type CA struct {
	Pool   *signers.Pool
	Issuer string
}

// NewCA makes a CA of profile whose certificates name issuer.
func NewCA(t testing.TB, profile signers.CAProfile, issuer string) *CA {
	t.Helper()
	ca, err := signers.NewCA(signers.Env{}, profile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca.State = signers.StateActive
	return &CA{Pool: &signers.Pool{Signer: profile.Signer, CAs: []*signers.CA{ca}}, Issuer: issuer}
}

// NewSPIFFECA is the anchorage.dev/spiffe CA of cluster in td.
func NewSPIFFECA(t testing.TB, td spiffeid.TrustDomain, cluster string) *CA {
	issuer := "https://hub.test/clusters/" + cluster
	return NewCA(t, signers.SPIFFECAProfile(cluster, td.Name(), issuer), issuer)
}

// NewServiceDNSCA is the anchorage.dev/service-dns CA of cluster.
func NewServiceDNSCA(t testing.TB, cluster string) *CA {
	issuer := "https://hub.test/clusters/" + cluster
	return NewCA(t, signers.ServiceDNSCAProfile(cluster, "cluster.local", issuer), issuer)
}

// AnchorPEM is the CA's trust anchor, as a trust bundle file holds it.
func (c *CA) AnchorPEM() []byte {
	return signers.EncodeCertificatesPEM([]*x509.Certificate{c.Pool.CAs[0].Anchor()})
}

// Leaf is an issued certificate with its fresh P-256 key.
type Leaf struct {
	KeyPEM, ChainPEM []byte
	Serial           *big.Int
}

// Bundle is the credential bundle as the kubelet writes it: the PKCS#8
// key, then the chain, leaf first.
func (l Leaf) Bundle() []byte { return append(append([]byte{}, l.KeyPEM...), l.ChainPEM...) }

// Issue signs tmpl for a fresh key, valid a day.
func (c *CA) Issue(t testing.TB, tmpl *x509.Certificate) Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := signers.Sign(signers.Env{}, c.Pool, c.Issuer, tmpl, key.Public(), 86400)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := iss.Chain()
	if err != nil {
		t.Fatal(err)
	}
	return Leaf{KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), ChainPEM: iss.ChainPEM(), Serial: chain[0].SerialNumber}
}

// SPIFFELeaf is the X509-SVID template of ns/sa in td.
func SPIFFELeaf(t testing.TB, td spiffeid.TrustDomain, ns, sa string) *x509.Certificate {
	t.Helper()
	tmpl, err := signers.SPIFFELeaf(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

// ServiceDNSLeaf is the service-dns template of names.
func ServiceDNSLeaf(t testing.TB, names ...string) *x509.Certificate {
	t.Helper()
	tmpl, err := signers.ServiceDNSLeaf(names)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}
