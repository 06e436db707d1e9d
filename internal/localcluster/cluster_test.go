package localcluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's global logger, which
	// complains with a stack trace if it is never set.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

const testIssuer = "https://hub.anchorage.test/clusters/east"

func TestCluster(t *testing.T) {
	c := localcluster.StartT(t, localcluster.Options{Name: "east", Issuer: testIssuer})
	ctx := t.Context()

	t.Run("OIDCDiscoveryServesCustomIssuer", func(t *testing.T) {
		raw, err := c.Clientset.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
		if err != nil {
			t.Fatalf("GET openid-configuration: %v", err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("decoding %s: %v", raw, err)
		}
		if doc.Issuer != testIssuer {
			t.Errorf("issuer = %q, want %q", doc.Issuer, testIssuer)
		}
		if c.Issuer() != testIssuer {
			t.Errorf("Cluster.Issuer() = %q, want %q", c.Issuer(), testIssuer)
		}
		if !strings.HasSuffix(doc.JWKSURI, "/openid/v1/jwks") {
			t.Errorf("jwks_uri = %q, want .../openid/v1/jwks", doc.JWKSURI)
		}
		jwks, err := c.Clientset.CoreV1().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
		if err != nil {
			t.Fatalf("GET jwks: %v", err)
		}
		var set struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) == 0 {
			t.Fatalf("jwks %s: want at least one key (err %v)", jwks, err)
		}
	})

	t.Run("PodCertificateAPIsServedAsV1", func(t *testing.T) {
		rl, err := c.Clientset.Discovery().ServerResourcesForGroupVersion("certificates.k8s.io/v1")
		if err != nil {
			t.Fatalf("discovery: %v", err)
		}
		got := map[string]bool{}
		for _, r := range rl.APIResources {
			got[r.Name] = true
		}
		for _, want := range []string{"podcertificaterequests", "podcertificaterequests/status", "clustertrustbundles", "certificatesigningrequests"} {
			if !got[want] {
				t.Errorf("certificates.k8s.io/v1 does not serve %s (serves %v)", want, got)
			}
		}
		// v1beta1 is off by default in 1.37: only v1 clients work.
		if _, err := c.Clientset.Discovery().ServerResourcesForGroupVersion("certificates.k8s.io/v1beta1"); !apierrors.IsNotFound(err) {
			t.Errorf("certificates.k8s.io/v1beta1: err = %v, want NotFound", err)
		}
	})

	t.Run("ConfigForIsSubjectToRBAC", func(t *testing.T) {
		const ns, sa = "rbac-test", "reader"
		cfg, err := c.ConfigFor(ctx, ns, sa)
		if err != nil {
			t.Fatalf("ConfigFor: %v", err)
		}
		cs := kubernetes.NewForConfigOrDie(cfg)

		review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectReview: %v", err)
		}
		if want := "system:serviceaccount:" + ns + ":" + sa; review.Status.UserInfo.Username != want {
			t.Errorf("authenticated as %q, want %q", review.Status.UserInfo.Username, want)
		}

		if _, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Fatalf("listing configmaps without RBAC: err = %v, want Forbidden", err)
		}
		grant(t, c, ns, "configmap-reader", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}, sa)
		eventually(t, func() error {
			_, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
			return err
		})

		// The token's issuer is the configured one, not the apiserver URL.
		tok, err := c.Token(ctx, ns, sa, nil, 0)
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if iss := jwtClaim(t, tok, "iss"); iss != testIssuer {
			t.Errorf("token iss = %q, want %q", iss, testIssuer)
		}
	})

	t.Run("ServiceExportCRDServed", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mcs-test"}}
		if err := c.Client.Create(ctx, ns); err != nil {
			t.Fatalf("creating namespace: %v", err)
		}
		se := &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "mcs-test", Name: "web"}}
		if err := c.Client.Create(ctx, se); err != nil {
			t.Fatalf("creating ServiceExport: %v", err)
		}
		got := &mcsv1alpha1.ServiceExport{}
		if err := c.Client.Get(ctx, clientKey("mcs-test", "web"), got); err != nil {
			t.Fatalf("getting ServiceExport: %v", err)
		}
		si := &mcsv1alpha1.ServiceImport{
			ObjectMeta: metav1.ObjectMeta{Namespace: "mcs-test", Name: "web"},
			Spec: mcsv1alpha1.ServiceImportSpec{
				Type:  mcsv1alpha1.ClusterSetIP,
				Ports: []mcsv1alpha1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
			},
		}
		if err := c.Client.Create(ctx, si); err != nil {
			t.Fatalf("creating ServiceImport: %v", err)
		}
	})

	t.Run("ClusterTrustBundleAttestAdmission", func(t *testing.T) {
		const ns, sa, signer = "ctb-test", "publisher", "anchorage.dev/spiffe"
		cfg, err := c.ConfigFor(ctx, ns, sa)
		if err != nil {
			t.Fatalf("ConfigFor: %v", err)
		}
		cs := kubernetes.NewForConfigOrDie(cfg)
		grantCluster(t, c, "ctb-writer", rbacv1.PolicyRule{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"clustertrustbundles"}, Verbs: []string{"create", "get", "list", "update", "delete"}}, ns, sa)

		bundle := selfSignedCAPEM(t)
		linked := func(name string) *certsv1.ClusterTrustBundle {
			return &certsv1.ClusterTrustBundle{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       certsv1.ClusterTrustBundleSpec{SignerName: signer, TrustBundle: bundle},
			}
		}
		// An unlinked bundle needs no attest; it also proves the RBAC grant
		// above is in effect before the admission check is exercised.
		eventually(t, func() error {
			_, err := cs.CertificatesV1().ClusterTrustBundles().Create(ctx, &certsv1.ClusterTrustBundle{
				ObjectMeta: metav1.ObjectMeta{Name: "unlinked"},
				Spec:       certsv1.ClusterTrustBundleSpec{TrustBundle: bundle},
			}, metav1.CreateOptions{})
			return err
		})

		_, err = cs.CertificatesV1().ClusterTrustBundles().Create(ctx, linked("anchorage.dev:spiffe:local"), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "attest") {
			t.Fatalf("creating a signer-linked ClusterTrustBundle without attest: err = %v, want Forbidden mentioning attest", err)
		}
		t.Logf("without attest: %v", err)

		grantCluster(t, c, "spiffe-attester", rbacv1.PolicyRule{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"signers"}, ResourceNames: []string{signer}, Verbs: []string{"attest"}}, ns, sa)
		eventually(t, func() error {
			_, err := cs.CertificatesV1().ClusterTrustBundles().Create(ctx, linked("anchorage.dev:spiffe:local"), metav1.CreateOptions{})
			return err
		})
		// The name must carry the signer prefix, whatever the permissions.
		if _, err := c.Clientset.CertificatesV1().ClusterTrustBundles().Create(ctx, linked("spiffe-local"), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("signer-linked bundle without the signer prefix: err = %v, want Invalid", err)
		}
	})

	t.Run("WriteKubeconfig", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := c.WriteKubeconfig(path); err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("loading kubeconfig: %v", err)
		}
		if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Fatalf("using kubeconfig: %v", err)
		}
	})
}

func TestTwoClustersAtOnce(t *testing.T) {
	localcluster.RequireAssets(t)
	var (
		wg       sync.WaitGroup
		clusters [2]*localcluster.Cluster
	)
	for i := range clusters {
		wg.Go(func() {
			// StartT would call t.Fatal off the test goroutine.
			c, err := localcluster.Start(context.Background(), localcluster.Options{Name: "c" + strconv.Itoa(i)})
			if err != nil {
				t.Errorf("starting cluster %d: %v", i, err)
				return
			}
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Error(err)
				}
			})
			clusters[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	a, b := clusters[0], clusters[1]
	if a.URL() == b.URL() {
		t.Fatalf("both clusters at %s", a.URL())
	}
	if a.Issuer() == b.Issuer() || !strings.HasPrefix(a.Issuer(), a.URL()) {
		t.Errorf("default issuers %q and %q: want each apiserver's own URL", a.Issuer(), b.Issuer())
	}
	ctx := t.Context()
	if _, err := a.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Clientset.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace created in a visible in b: err = %v", err)
	}
	// Tokens are issued per cluster: b does not accept a's.
	tok, err := a.Token(ctx, "default", "x", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := *b.Config
	cfg.CertData, cfg.KeyData, cfg.BearerToken = nil, nil, tok
	if _, err := kubernetes.NewForConfigOrDie(&cfg).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("a's token against b: err = %v, want Unauthorized", err)
	}

	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestDataDirSurvivesRestart(t *testing.T) {
	localcluster.RequireAssets(t)
	dataDir := t.TempDir()
	ctx := t.Context()
	c := localcluster.StartT(t, localcluster.Options{Name: "persistent", DataDir: dataDir})
	if _, err := c.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "member")); err != nil {
		t.Fatalf("etcd data removed by Stop: %v", err)
	}
	c2 := localcluster.StartT(t, localcluster.Options{Name: "persistent-again", DataDir: dataDir})
	if _, err := c2.Clientset.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("namespace lost across a restart with the same DataDir: %v", err)
	}
}

func TestStartFailureReportsAndCleansUp(t *testing.T) {
	localcluster.RequireAssets(t)
	before := childProcesses(t)
	_, err := localcluster.Start(context.Background(), localcluster.Options{
		Name:      "broken",
		ExtraArgs: map[string]string{"no-such-flag": "1"},
	})
	if err == nil {
		t.Fatal("Start with an unknown apiserver flag succeeded")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("error does not quote the apiserver's complaint: %v", err)
	}
	if after := childProcesses(t); len(after) > len(before) {
		t.Errorf("processes left running after a failed Start: %v (before: %v)", after, before)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "localcluster-broken-*")); len(left) > 0 {
		t.Errorf("files left after a failed Start: %v", left)
	}
}

func TestAssetsDir(t *testing.T) {
	fake := func(t *testing.T, dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"kube-apiserver", "etcd"} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("KUBEBUILDER_ASSETS", func(t *testing.T) {
		dir := t.TempDir()
		fake(t, dir)
		t.Setenv("KUBEBUILDER_ASSETS", dir)
		if got, err := localcluster.AssetsDir(); err != nil || got != dir {
			t.Errorf("AssetsDir() = %q, %v; want %q", got, err, dir)
		}
		t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
		if _, err := localcluster.AssetsDir(); err == nil {
			t.Error("AssetsDir() with an empty KUBEBUILDER_ASSETS folder succeeded")
		}
	})
	t.Run("Cache", func(t *testing.T) {
		root := t.TempDir()
		t.Setenv("KUBEBUILDER_ASSETS", "")
		t.Setenv("ANCHORAGE_ASSETS_CACHE", root)
		if _, err := localcluster.AssetsDir(); err != localcluster.ErrNoAssets {
			t.Errorf("empty cache: err = %v, want ErrNoAssets", err)
		}
		// A build in progress does not count, even once both binaries are
		// there (before the script renames its folder into place).
		for _, building := range []string{"k8s-v1.37.1-go1.26.0.tmp", "k8s-v1.37.1-go1.26.9.build.Ab12Cd"} {
			fake(t, filepath.Join(root, building))
			if _, err := localcluster.AssetsDir(); err != localcluster.ErrNoAssets {
				t.Errorf("cache with %s: err = %v, want ErrNoAssets", building, err)
			}
		}
		// Binaries built by another Go patch release are fine.
		other := filepath.Join(root, "k8s-v1.37.1-go1.26.0")
		fake(t, other)
		if got, err := localcluster.AssetsDir(); err != nil || got != other {
			t.Errorf("AssetsDir() = %q, %v; want %q", got, err, other)
		}
	})
}

// --- helpers ---

func clientKey(ns, name string) client.ObjectKey {
	return client.ObjectKey{Namespace: ns, Name: name}
}

func eventually(t *testing.T, f func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("condition not met within 15s: %v", last)
	}
}

func grant(t *testing.T, c *localcluster.Cluster, ns, name string, rule rbacv1.PolicyRule, sa string) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.Clientset.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: []rbacv1.PolicyRule{rule}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clientset.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: sa}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func grantCluster(t *testing.T, c *localcluster.Cluster, name string, rule rbacv1.PolicyRule, ns, sa string) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.Clientset.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{rule}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clientset.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: sa}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func jwtClaim(t *testing.T, tok, claim string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWS: %q", tok)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	s, _ := claims[claim].(string)
	return s
}

func selfSignedCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// childProcesses lists the live children of this test process (Linux /proc),
// as "pid:comm".
func childProcesses(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc to look for leaked processes: %v", err)
	}
	self := strconv.Itoa(os.Getpid())
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces, so split after ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) >= 2 && fields[1] == self && fields[0] != "Z" {
			out = append(out, e.Name()+":"+s[strings.IndexByte(s, '(')+1:i])
		}
	}
	return out
}
