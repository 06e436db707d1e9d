package kubeletsim

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNewKeyAndCSR(t *testing.T) {
	for _, kt := range KeyTypes() {
		if testing.Short() && (kt == "RSA3072" || kt == "RSA4096") {
			continue
		}
		key, der, err := NewKeyAndCSR(kt)
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Errorf("%s: CSR signature: %v", kt, err)
		}
		if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
			t.Errorf("%s: CSR is not for the key", kt)
		}
		if csr.Subject.String() != "" || len(csr.Extensions) != 0 {
			t.Errorf("%s: CSR not empty: subject %q, %d extensions", kt, csr.Subject, len(csr.Extensions))
		}
		if _, err := encodeKey(key); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
	}
	if _, _, err := NewKeyAndCSR("RSA2048"); err == nil {
		t.Error("RSA2048 accepted")
	}
}

func TestCleanCertificateChain(t *testing.T) {
	in := "junk\n" + string(pem.EncodeToMemory(&pem.Block{Type: "TRUSTED CERTIFICATE", Headers: map[string]string{"a": "b"}, Bytes: []byte{1}})) +
		"between\n" + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{2}})) + "trailer"
	want := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{2}}))
	if got := string(cleanCertificateChain([]byte(in))); got != want {
		t.Errorf("cleanCertificateChain:\n%s\nwant\n%s", got, want)
	}
}

func TestTimeScale(t *testing.T) {
	bra := metav1.NewTime(time.Now().Add(12 * time.Hour))
	d := TimeScale(1.0 / 3600)(&certsv1.PodCertificateRequest{Status: certsv1.PodCertificateRequestStatus{BeginRefreshAt: &bra}})
	if d < 11*time.Second || d > 12*time.Second {
		t.Errorf("TimeScale(1/3600) of 12h = %v, want about 12s", d)
	}
}
