package signers

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The fixed world of these tests.
var (
	t0     = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	issuer = "https://hub.example/clusters/east"
	td     = spiffeid.RequireTrustDomainFromString("east.example")
)

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// testEnv has a fixed clock and serials counting up from 1000.
func testEnv(at time.Time) Env {
	n := int64(999)
	return Env{Clock: fixedClock(at), Serial: func() (*big.Int, error) { n++; return big.NewInt(n), nil }}
}

func key(t testing.TB, name string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name + ".key.pem")
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKeyPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newPool(t testing.TB, profile CAProfile, keyName string) *Pool {
	t.Helper()
	ca, err := NewCA(testEnv(t0), profile, key(t, keyName))
	if err != nil {
		t.Fatal(err)
	}
	ca.State = StateActive
	return &Pool{Signer: profile.Signer, CAs: []*CA{ca}}
}

var (
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSAN         = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidNameConstr  = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidBasicConstr = asn1.ObjectIdentifier{2, 5, 29, 19}
)

func critical(c *x509.Certificate, oid asn1.ObjectIdentifier) (present, crit bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true, e.Critical
		}
	}
	return false, false
}

func TestSPIFFECA(t *testing.T) {
	p := newPool(t, SPIFFECAProfile("east", td.Name(), issuer), "ca-p256")
	ca := p.CAs[0].Certificate

	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA=%v valid=%v maxPathLen=%d", ca.IsCA, ca.BasicConstraintsValid, ca.MaxPathLen)
	}
	if ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", ca.KeyUsage)
	}
	if len(ca.URIs) != 1 || ca.URIs[0].String() != "spiffe://east.example" {
		t.Errorf("CA SPIFFE ID %v", ca.URIs)
	}
	if got, want := ca.NotBefore, t0.Add(-time.Hour); !got.Equal(want) {
		t.Errorf("NotBefore %v, want %v", got, want)
	}
	if got, want := ca.NotAfter, t0.Add(365*24*time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter %v, want %v", got, want)
	}
	if ca.SerialNumber.Int64() != 1000 {
		t.Errorf("serial %v, want the injected 1000", ca.SerialNumber)
	}
	// RFC 7093 method 1, computed independently.
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(ca.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	if len(ca.SubjectKeyId) != 20 {
		t.Errorf("SKID length %d", len(ca.SubjectKeyId))
	}
	wantAIA := issuer + "/.well-known/anchorage/ca/spiffe/" + hex.EncodeToString(ca.SubjectKeyId) + ".der"
	if len(ca.IssuingCertificateURL) != 1 || ca.IssuingCertificateURL[0] != wantAIA {
		t.Errorf("AIA %v, want %s", ca.IssuingCertificateURL, wantAIA)
	}
	if got := p.CAs[0].SKID(); got != hex.EncodeToString(ca.SubjectKeyId) {
		t.Errorf("SKID() %s", got)
	}
	if !equalStrings(ca.PermittedURIDomains, []string{"east.example"}) || !equalStrings(ca.ExcludedURIDomains, []string{".east.example"}) {
		t.Errorf("URI constraints permitted=%v excluded=%v", ca.PermittedURIDomains, ca.ExcludedURIDomains)
	}
	if present, crit := critical(ca, oidNameConstr); !present || !crit {
		t.Errorf("name constraints present=%v critical=%v", present, crit)
	}
	if got, err := IssuerFromCertificate(ca); err != nil || got != issuer {
		t.Errorf("IssuerFromCertificate(CA) = %q, %v", got, err)
	}
}

func TestServiceDNSCA(t *testing.T) {
	p := newPool(t, ServiceDNSCAProfile("east", "cluster.local", issuer), "ca-p256")
	ca := p.CAs[0].Certificate
	if !equalStrings(ca.PermittedDNSDomains, []string{"svc", "clusterset.local", "cluster.local"}) {
		t.Errorf("DNS constraints %v", ca.PermittedDNSDomains)
	}
	if len(ca.URIs) != 0 {
		t.Errorf("service-dns CA has URIs %v", ca.URIs)
	}
	// rustls-webpki rejects any chain with a URI constraint (RUSTSEC-2026-0098).
	if len(ca.PermittedURIDomains)+len(ca.ExcludedURIDomains) != 0 {
		t.Errorf("service-dns CA has URI constraints %v / %v: Rust clients would refuse its leaves", ca.PermittedURIDomains, ca.ExcludedURIDomains)
	}
	if !strings.HasPrefix(ca.IssuingCertificateURL[0], issuer+"/.well-known/anchorage/ca/service-dns/") {
		t.Errorf("AIA %v", ca.IssuingCertificateURL)
	}
}

func TestSPIFFELeafEveryKeyType(t *testing.T) {
	p := newPool(t, SPIFFECAProfile("east", td.Name(), issuer), "ca-p256")
	bundle := x509bundle.FromX509Authorities(td, p.Anchors(t0))
	at := t0.Add(10 * time.Minute)

	for _, kt := range AllKeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			pub := key(t, "leaf-"+string(kt)).Public()
			if got, err := KeyPolicy(AllKeyTypes()).Check(pub); err != nil || got != kt {
				t.Fatalf("Check = %v, %v", got, err)
			}
			tmpl, err := SPIFFELeaf(td, "shop", "frontend")
			if err != nil {
				t.Fatal(err)
			}
			iss, err := Sign(testEnv(at), p, issuer, tmpl, pub, 86400)
			if err != nil {
				t.Fatal(err)
			}
			chain := mustChain(t, iss)
			leaf := chain[0]
			if len(chain) != 1 {
				t.Errorf("chain of %d certificates; a root CA's leaf chain is the leaf alone", len(chain))
			}
			if back, err := ParseCertificatesPEM(iss.ChainPEM()); err != nil || len(back) != 1 || !back[0].Equal(leaf) {
				t.Errorf("ChainPEM does not hold the chain: %v", err)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://east.example/ns/shop/sa/frontend" {
				t.Errorf("URI SANs %v", leaf.URIs)
			}
			if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
				t.Errorf("unexpected SANs")
			}
			if len(leaf.Subject.Names) != 0 {
				t.Errorf("subject %q, want empty", leaf.Subject)
			}
			if _, crit := critical(leaf, oidSAN); !crit {
				t.Error("SAN must be critical with an empty subject")
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %v", leaf.KeyUsage)
			}
			if _, crit := critical(leaf, oidKeyUsage); !crit {
				t.Error("key usage must be critical")
			}
			if !equalEKU(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth) {
				t.Errorf("EKU %v", leaf.ExtKeyUsage)
			}
			if present, _ := critical(leaf, oidBasicConstr); !present || leaf.IsCA {
				t.Error("leaf must carry basicConstraints cA=false")
			}
			pk, _ := pub.(interface{ Equal(crypto.PublicKey) bool })
			if !pk.Equal(leaf.PublicKey) {
				t.Error("leaf not issued to the requested key")
			}
			// Lifetime 24h, backdated 2 minutes, refresh at half.
			wantNB := at.Add(-2 * time.Minute)
			if !leaf.NotBefore.Equal(wantNB) || !iss.NotBefore.Equal(wantNB) {
				t.Errorf("notBefore %v / %v, want %v", leaf.NotBefore, iss.NotBefore, wantNB)
			}
			if want := wantNB.Add(24 * time.Hour); !leaf.NotAfter.Equal(want) || !iss.NotAfter.Equal(want) {
				t.Errorf("notAfter %v, want %v", leaf.NotAfter, want)
			}
			if want := wantNB.Add(12 * time.Hour); !iss.BeginRefreshAt.Equal(want) {
				t.Errorf("beginRefreshAt %v, want %v", iss.BeginRefreshAt, want)
			}
			if got, err := IssuerFromCertificate(leaf); err != nil || got != issuer {
				t.Errorf("IssuerFromCertificate = %q, %v", got, err)
			}
			id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(at))
			if err != nil {
				t.Fatalf("go-spiffe rejects the SVID: %v", err)
			}
			if id.String() != "spiffe://east.example/ns/shop/sa/frontend" {
				t.Errorf("verified ID %s", id)
			}
		})
	}
}

func TestServiceDNSLeaf(t *testing.T) {
	p := newPool(t, ServiceDNSCAProfile("east", "cluster.local", issuer), "ca-p256")
	names := []string{"web.shop.svc", "web.shop.svc.cluster.local", "web.shop.svc.clusterset.local", "web-0.east.web.shop.svc.clusterset.local"}
	tmpl, err := ServiceDNSLeaf(names)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := Sign(testEnv(t0), p, issuer, tmpl, key(t, "leaf-ECDSAP256").Public(), 86400)
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustChain(t, iss)[0]
	if !equalStrings(leaf.DNSNames, names) || len(leaf.URIs) != 0 {
		t.Errorf("SANs dns=%v uris=%v", leaf.DNSNames, leaf.URIs)
	}
	if !equalEKU(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("EKU %v", leaf.ExtKeyUsage)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.Anchors(t0)[0])
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, CurrentTime: t0}); err != nil {
			t.Errorf("verify as %s: %v", n, err)
		}
	}
	if _, err := ServiceDNSLeaf(nil); err == nil {
		t.Error("no names must be an error")
	}
	if _, err := ServiceDNSLeaf([]string{"a..b.svc"}); err == nil {
		t.Error("an invalid name must be an error")
	}
}

// A CA must not be able to vouch for names outside its constraints, even
// if its key signs them: verification rejects the chain.
func TestNameConstraints(t *testing.T) {
	spiffe := newPool(t, SPIFFECAProfile("east", td.Name(), issuer), "ca-p256")
	dns := newPool(t, ServiceDNSCAProfile("east", "cluster.local", issuer), "ca2-p256")
	pub := key(t, "leaf-ECDSAP256").Public()

	forge := func(p *Pool, tmpl *x509.Certificate) *x509.Certificate {
		ca := p.CAs[0]
		tmpl.SerialNumber = big.NewInt(7)
		tmpl.NotBefore, tmpl.NotAfter = t0, t0.Add(time.Hour)
		der, err := x509.CreateCertificate(nil, tmpl, ca.Certificate, pub, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	verify := func(p *Pool, leaf *x509.Certificate) error {
		roots := x509.NewCertPool()
		roots.AddCert(p.CAs[0].Certificate)
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0.Add(time.Minute), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	uri := func(s string) []*url.URL { u, _ := url.Parse(s); return []*url.URL{u} }

	for _, tc := range []struct {
		name string
		pool *Pool
		tmpl *x509.Certificate
		ok   bool
	}{
		{"own trust domain", spiffe, &x509.Certificate{URIs: uri("spiffe://east.example/ns/a/sa/b")}, true},
		{"another trust domain", spiffe, &x509.Certificate{URIs: uri("spiffe://west.example/ns/a/sa/b")}, false},
		{"a subdomain is another trust domain", spiffe, &x509.Certificate{URIs: uri("spiffe://evil.east.example/ns/a/sa/b")}, false},
		{"service name", dns, &x509.Certificate{DNSNames: []string{"web.shop.svc"}}, true},
		{"cluster domain", dns, &x509.Certificate{DNSNames: []string{"web.shop.svc.cluster.local"}}, true},
		{"clusterset name", dns, &x509.Certificate{DNSNames: []string{"web.shop.svc.clusterset.local"}}, true},
		{"public name", dns, &x509.Certificate{DNSNames: []string{"bank.example.com"}}, false},
		// Each CA shuts out the name types it never issues: verifiers
		// check a SAN only against constraints of its own type.
		{"DNS name under the SPIFFE CA", spiffe, &x509.Certificate{DNSNames: []string{"bank.example.com"}}, false},
		{"service name under the SPIFFE CA", spiffe, &x509.Certificate{DNSNames: []string{"web.shop.svc"}}, false},
		{"DNS name beside the SPIFFE ID", spiffe, &x509.Certificate{URIs: uri("spiffe://east.example/ns/a/sa/b"), DNSNames: []string{"bank.example.com"}}, false},
		{"IPv4 under the SPIFFE CA", spiffe, &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, false},
		{"IPv6 under the SPIFFE CA", spiffe, &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("2001:db8::1")}}, false},
		{"IPv4 under the service-dns CA", dns, &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("192.168.1.1")}}, false},
		{"IPv6 under the service-dns CA", dns, &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("::1")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.pool, forge(tc.pool, tc.tmpl))
			if tc.ok && err != nil {
				t.Errorf("rejected: %v", err)
			}
			if !tc.ok && err == nil {
				t.Error("accepted a name outside the CA's constraints")
			}
		})
	}
}

func TestLeafValidity(t *testing.T) {
	caEnd := t0.Add(365 * 24 * time.Hour)
	for _, tc := range []struct {
		name          string
		now           time.Time
		max           int32
		caEnd         time.Time
		wantLife      time.Duration
		wantRefreshIn time.Duration
		wantErr       error
	}{
		{"default", t0, 86400, caEnd, 24 * time.Hour, 12 * time.Hour, nil},
		{"unset max", t0, 0, caEnd, 24 * time.Hour, 12 * time.Hour, nil},
		{"longer max is capped at 24h", t0, 7862400, caEnd, 24 * time.Hour, 12 * time.Hour, nil},
		{"minimum", t0, 3600, caEnd, time.Hour, 30 * time.Minute, nil},
		{"sub-second now is truncated", t0.Add(700 * time.Millisecond), 7200, caEnd, 2 * time.Hour, time.Hour, nil},
		{"clipped to the CA", t0, 86400, t0.Add(5 * time.Hour), 5*time.Hour + 2*time.Minute, (5*time.Hour + 2*time.Minute) / 2, nil},
		{"CA too close to its end", t0, 86400, t0.Add(30 * time.Minute), 0, 0, ErrCAExpiring},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := LeafValidity(tc.now, tc.max, tc.caEnd)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			nb := tc.now.Truncate(time.Second).Add(-2 * time.Minute)
			if !v.NotBefore.Equal(nb) || v.Lifetime() != tc.wantLife || v.BeginRefreshAt.Sub(v.NotBefore) != tc.wantRefreshIn {
				t.Errorf("got nb=%v life=%v refresh+%v", v.NotBefore, v.Lifetime(), v.BeginRefreshAt.Sub(v.NotBefore))
			}
			// The apiserver's own rules.
			if v.BeginRefreshAt.Before(v.NotBefore.Add(10*time.Minute)) || v.BeginRefreshAt.After(v.NotAfter.Add(-10*time.Minute)) {
				t.Error("beginRefreshAt outside [notBefore+10m, notAfter-10m]")
			}
			if v.NotAfter.After(tc.caEnd) {
				t.Error("leaf outlives its CA")
			}
		})
	}
}

func TestKeyPolicy(t *testing.T) {
	_, err := KeyPolicy(AllKeyTypes()).Check(key(t, "leaf-RSA2048").Public())
	if err == nil || !strings.Contains(err.Error(), "RSA key of 2048 bits") || !strings.Contains(err.Error(), "supported key types: RSA3072, RSA4096, ECDSAP256, ECDSAP384, ECDSAP521, ED25519") {
		t.Errorf("RSA 2048: %v", err)
	}
	_, err = KeyPolicy{KeyTypeECDSAP256}.Check(key(t, "leaf-ED25519").Public())
	if err == nil || err.Error() != "key type ED25519 is not allowed by this signer; supported key types: ECDSAP256" {
		t.Errorf("policy subset: %v", err)
	}
	if _, err := ParseKeyTypes([]string{"ECDSAP256", "DSA"}); err == nil {
		t.Error("unknown key type accepted")
	}
	if got, _ := ParseKeyTypes([]string{"ED25519", " ED25519"}); len(got) != 1 {
		t.Errorf("duplicates kept: %v", got)
	}
}

func TestPoolRotationStatesAndPersistence(t *testing.T) {
	prof := SPIFFECAProfile("east", td.Name(), issuer)
	p := newPool(t, prof, "ca-p256")
	next, err := NewCA(testEnv(t0), prof, key(t, "ca2-p256"))
	if err != nil {
		t.Fatal(err)
	}
	next.State = StateNext
	p.CAs = append(p.CAs, next)
	if got := p.Anchors(t0); len(got) != 2 || got[0] != p.CAs[0].Certificate || got[1] != next.Certificate {
		t.Fatalf("anchors: want active then next, got %d", len(got))
	}

	// Promote: the old CA retires and stays published for a leaf lifetime.
	p.CAs[0].State, p.CAs[0].RetiredAt = StateRetired, t0
	next.State = StateActive
	if a, _ := p.Active(); a != next {
		t.Fatal("next not active")
	}
	if got := p.Anchors(t0.Add(23 * time.Hour)); len(got) != 2 || got[0] != next.Certificate {
		t.Errorf("retired CA must stay published while its leaves live; got %d anchors", len(got))
	}
	if got := p.Anchors(t0.Add(24 * time.Hour)); len(got) != 1 {
		t.Errorf("retired CA must go once its last leaf expired; got %d anchors", len(got))
	}

	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalPool(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.Signer != p.Signer || len(back.CAs) != 2 || back.CAs[0].State != StateRetired || !back.CAs[0].RetiredAt.Equal(t0) ||
		!back.CAs[1].Certificate.Equal(next.Certificate) {
		t.Errorf("round trip lost data: %+v", back)
	}

	p.CAs[0].State = StateActive
	if _, err := p.Active(); err == nil {
		t.Error("two active CAs accepted")
	}
	if _, err := UnmarshalPool([]byte(`{"signer":"x","cas":[]}`)); err == nil {
		t.Error("a pool without an active CA accepted")
	}
	if _, err := UnmarshalPool([]byte(`{`)); err == nil {
		t.Error("garbage accepted")
	}
}

// Rotation as the agent drives it: next added, promoted (the old CA
// retires), pruned once its leaves expired; an aborted rotation drops next.
// Every step returns a new pool and leaves the one in use untouched.
func TestPoolRotationSteps(t *testing.T) {
	prof := SPIFFECAProfile("east", td.Name(), issuer)
	p := newPool(t, prof, "ca-p256")
	ca2, err := NewCA(testEnv(t0), prof, key(t, "ca2-p256"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Promoted(t0); err == nil {
		t.Error("promoted without a next CA")
	}
	added, err := p.WithNext(ca2, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.CAs) != 1 || added.Next() == nil || !added.Next().AddedAt.Equal(t0) || added.Next().State != StateNext {
		t.Fatalf("WithNext: original %d CAs, next %+v", len(p.CAs), added.Next())
	}
	if _, err := added.WithNext(ca2, t0); err == nil {
		t.Error("a second next CA accepted")
	}
	if aborted := added.WithoutNext(); len(aborted.CAs) != 1 || aborted.Next() != nil {
		t.Error("abort kept the next CA")
	}

	t1 := t0.Add(time.Hour)
	promoted, err := added.Promoted(t1)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := promoted.Active(); !a.Certificate.Equal(ca2.Certificate) {
		t.Error("next not active after promotion")
	}
	if old := promoted.CAs[0]; old.State != StateRetired || !old.RetiredAt.Equal(t1) || added.CAs[0].State != StateActive {
		t.Errorf("old CA %s retired at %v; the pool in use must not change", old.State, old.RetiredAt)
	}
	data, err := promoted.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalPool(data)
	if err != nil {
		t.Fatal(err)
	}
	if !back.CAs[1].AddedAt.Equal(t0) || !back.CAs[0].RetiredAt.Equal(t1) {
		t.Error("addedAt or retiredAt lost in the round trip")
	}
	if _, dropped := promoted.Pruned(t1.Add(MaxLeafLifetime - time.Second)); dropped {
		t.Error("retired CA pruned while its leaves may live")
	}
	if pruned, dropped := promoted.Pruned(t1.Add(MaxLeafLifetime)); !dropped || len(pruned.CAs) != 1 || pruned.CAs[0].State != StateActive {
		t.Error("retired CA not pruned after its last leaf expired")
	}
}

// An operator's intermediate under their own root: leaves chain through
// the intermediate and the root is the published anchor.
func TestImportCA(t *testing.T) {
	rootKey, interKey := key(t, "root-p384"), key(t, "ca-p256")
	env := testEnv(t0)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "corp root"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(nil, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "corp east"}, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, PermittedURIDomains: []string{"east.example"}}
	interDER, _ := x509.CreateCertificate(nil, interTmpl, root, interKey.Public(), rootKey)
	inter, _ := x509.ParseCertificate(interDER)

	keyDER, _ := x509.MarshalPKCS8PrivateKey(interKey)
	keyPEM := pemBlock("PRIVATE KEY", keyDER)
	chainPEM := EncodeCertificatesPEM([]*x509.Certificate{inter, root})

	ca, err := ImportCA(keyPEM, chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Anchor() != ca.Chain[0] || !ca.Anchor().Equal(root) {
		t.Error("the anchor of an imported chain is its last certificate")
	}
	p := &Pool{Signer: SPIFFESignerName, CAs: []*CA{ca}}
	tmpl, _ := SPIFFELeaf(td, "ns1", "sa1")
	iss, err := Sign(env, p, issuer, tmpl, key(t, "leaf-ED25519").Public(), 3600)
	if err != nil {
		t.Fatal(err)
	}
	chain := mustChain(t, iss)
	if len(chain) != 2 || !chain[1].Equal(inter) {
		t.Fatalf("chain must be leaf + intermediate, got %d certificates", len(chain))
	}
	if back, err := ParseCertificatesPEM(iss.ChainPEM()); err != nil || len(back) != 2 || !back[1].Equal(inter) {
		t.Errorf("ChainPEM must hold leaf + intermediate: %v", err)
	}
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, p.Anchors(t0)), x509svid.WithTime(t0)); err != nil {
		t.Errorf("verify through the intermediate: %v", err)
	}

	if _, err := ImportCA(keyPEM, EncodeCertificatesPEM([]*x509.Certificate{root})); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v", err)
	}
	if _, err := ImportCA([]byte("nope"), chainPEM); err == nil {
		t.Error("garbage key accepted")
	}
}

func TestParseCertificatesPEM(t *testing.T) {
	p := newPool(t, SPIFFECAProfile("east", td.Name(), issuer), "ca-p256")
	good := EncodeCertificatesPEM(p.Anchors(t0))
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"empty", "", "no certificate found"},
		{"garbage", "hello", "not a PEM block"},
		{"trailing garbage", string(good) + "hello", "not a PEM block"},
		{"key block", string(pemBlock("PRIVATE KEY", []byte{1})), `block of type "PRIVATE KEY"`},
		{"headers", "-----BEGIN CERTIFICATE-----\nFoo: bar\n\nAAAA\n-----END CERTIFICATE-----\n", "must not have headers"},
		{"bad DER", string(pemBlock("CERTIFICATE", []byte{1, 2, 3})), "certificate 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseCertificatesPEM([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
	if certs, err := ParseCertificatesPEM(good); err != nil || len(certs) != 1 {
		t.Errorf("good PEM: %v", err)
	}
}

func TestIssuerFromCertificate(t *testing.T) {
	for _, tc := range []struct {
		urls []string
		want string
	}{
		{[]string{"https://hub.example/clusters/east/.well-known/anchorage/ca/spiffe/0a1b.der"}, "https://hub.example/clusters/east"},
		{[]string{"http://other/ca.der", "https://h/c/x/.well-known/anchorage/ca/service-dns/ff.der"}, "https://h/c/x"},
		{[]string{"https://h/.well-known/anchorage/ca/spiffe/zz.der"}, ""},
		{[]string{"https://h/.well-known/anchorage/ca/spiffe/a/b.der"}, ""},
		{nil, ""},
	} {
		got, err := IssuerFromCertificate(&x509.Certificate{IssuingCertificateURL: tc.urls})
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("%v: got %q, %v", tc.urls, got, err)
		}
	}
}

func TestValidDNSName(t *testing.T) {
	long := strings.Repeat("a", 63)
	for name, want := range map[string]bool{
		"web.shop.svc": true, long + ".svc": true, long + "a.svc": false,
		strings.Repeat(long+".", 4)[:254]: false, "": false, "a..b": false, ".a": false, "a.": false,
		"-a.svc": false, "a-.svc": false, "A.svc": false, "a_b.svc": false,
	} {
		if got := ValidDNSName(name); got != want {
			t.Errorf("ValidDNSName(%q) = %v", name, got)
		}
	}
}

func TestSlug(t *testing.T) {
	if Slug(SPIFFESignerName) != "spiffe" || Slug(ServiceDNSSignerName) != "service-dns" {
		t.Error("slugs")
	}
}

func mustChain(t *testing.T, iss *Issued) []*x509.Certificate {
	t.Helper()
	chain, err := iss.Chain()
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func equalStrings(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func equalEKU(got []x509.ExtKeyUsage, want ...x509.ExtKeyUsage) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// CAs written into a pool by hand carry no times. A retired one stays
// published (its leaves may live another day) until Stamped times it from
// now; a second next CA is never promoted, since promoting both would
// leave two active CAs.
func TestPoolCAsWithoutTimes(t *testing.T) {
	prof := SPIFFECAProfile("east", td.Name(), issuer)
	p := newPool(t, prof, "ca-p256")
	retired, err := NewCA(testEnv(t0), prof, key(t, "ca2-p256"))
	if err != nil {
		t.Fatal(err)
	}
	retired.State = StateRetired
	next, err := NewCA(testEnv(t0), prof, key(t, "root-p384"))
	if err != nil {
		t.Fatal(err)
	}
	next.State = StateNext
	p.CAs = append(p.CAs, retired, next)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}

	later := t0.Add(3 * MaxLeafLifetime)
	if got := p.Anchors(later); len(got) != 3 {
		t.Errorf("a retired CA without RetiredAt must stay published; got %d anchors", len(got))
	}
	if _, dropped := p.Pruned(later); dropped {
		t.Error("a retired CA without RetiredAt was pruned")
	}

	stamped, skids := p.Stamped(later)
	if !equalStrings(skids, []string{retired.SKID(), next.SKID()}) {
		t.Errorf("stamped %v, want the retired then the next CA", skids)
	}
	if r := stamped.CAs[1]; r.State != StateRetired || !r.RetiredAt.Equal(later) || !stamped.CAs[2].AddedAt.Equal(later) || !stamped.CAs[0].AddedAt.IsZero() {
		t.Errorf("times after Stamped: retiredAt %v, addedAt %v, active addedAt %v", r.RetiredAt, stamped.CAs[2].AddedAt, stamped.CAs[0].AddedAt)
	}
	if !p.CAs[1].RetiredAt.IsZero() || !p.CAs[2].AddedAt.IsZero() {
		t.Error("Stamped changed the pool in use")
	}
	if _, again := stamped.Stamped(later.Add(time.Hour)); len(again) != 0 {
		t.Errorf("stamped again: %v", again)
	}
	if _, dropped := stamped.Pruned(later.Add(MaxLeafLifetime - time.Second)); dropped {
		t.Error("retired CA pruned while its leaves may live")
	}
	if got := stamped.Anchors(later.Add(MaxLeafLifetime)); len(got) != 2 {
		t.Errorf("retired CA must go a leaf lifetime after it was stamped; got %d anchors", len(got))
	}
	if pruned, dropped := stamped.Pruned(later.Add(MaxLeafLifetime)); !dropped || len(pruned.CAs) != 2 {
		t.Error("retired CA not pruned a leaf lifetime after it was stamped")
	}

	// Two next CAs: the pool still loads and signs (a hand edit must not
	// stop the signer), but is never promoted into two active CAs.
	second := *next
	p.CAs = append(p.CAs, &second)
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := UnmarshalPool(data)
	if err != nil {
		t.Fatalf("a pool with two next CAs must load: %v", err)
	}
	if _, err := loaded.Active(); err != nil {
		t.Errorf("no active CA to sign with: %v", err)
	}
	if _, err := loaded.Promoted(later); err == nil || !strings.Contains(err.Error(), "2 next CAs") {
		t.Errorf("Promoted with two next CAs: %v", err)
	}
}
