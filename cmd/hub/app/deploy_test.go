package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/cmd/hub/app"
	"github.com/anchorage-dev/anchorage/internal/hub/api"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/manifests"
	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
)

// deploy/hub applies cleanly (server-side, CRDs included), its container
// args parse with the hub's own flags, and a hub running as its
// ServiceAccount can do its job: make join tokens and write status.
func TestDeployHub(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// OwnerReferencesPermissionEnforcement, as on OpenShift and hardened
	// clusters: the join token Secret's controller reference needs update
	// on memberclusters/finalizers.
	cl := localcluster.StartT(t, localcluster.Options{Name: "hub", Scheme: app.Scheme(),
		ExtraArgs: map[string]string{"enable-admission-plugins": "OwnerReferencesPermissionEnforcement"}})
	objs, err := manifests.Load(filepath.Join("..", "..", "..", "deploy", "hub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Apply(ctx, cl.Client, "anchorage-test", objs); err != nil {
		t.Fatalf("applying deploy/hub: %v", err)
	}

	var dep appsv1.Deployment
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *dep.Spec.Replicas)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	opts := app.NewOptions()
	fs := pflag.NewFlagSet("hub", pflag.ContinueOnError)
	opts.AddFlags(fs)
	expand := strings.NewReplacer("$(EXTERNAL_URL)", "https://hub.example.com", "$(POD_NAMESPACE)", "anchorage-hub")
	var args []string
	for _, a := range c.Args {
		args = append(args, expand.Replace(a))
	}
	if err := fs.Parse(args); err != nil {
		t.Fatalf("the Deployment's args do not parse: %v", err)
	}
	if err := opts.Validate(); err != nil {
		t.Errorf("the Deployment's args do not validate: %v", err)
	}
	if opts.TLSCertFile != "/etc/anchorage/tls/tls.crt" || opts.Namespace != "anchorage-hub" {
		t.Errorf("parsed %+v", opts)
	}
	// The placeholder is refused, so a forgotten overlay fails loudly.
	opts.ExternalURL = "CHANGE_ME"
	if err := opts.Validate(); err == nil {
		t.Error("the ConfigMap placeholder passes validation")
	}

	// Run the hub with the manifest's identity.
	cfg, err := cl.ConfigFor(ctx, "anchorage-hub", "hub")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hopts := app.NewOptions()
	hopts.ExternalURL = "https://" + ln.Addr().String()
	hopts.DevCAFile = filepath.Join(t.TempDir(), "ca.pem")
	hctx, hcancel := context.WithCancel(ctrl.LoggerInto(ctx, testr.New(t)))
	h, err := app.New(hctx, hopts, cfg, ln)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Start(hctx) }()
	defer func() { hcancel(); <-done }()
	if _, err := os.Stat(hopts.DevCAFile); err != nil {
		t.Fatalf("development CA not written: %v", err)
	}
	// A fresh install has no MemberCluster or TrustDomain yet, and the
	// rollout waits for readiness before the first one is created.
	waitReady(ctx, t, hopts.ExternalURL, hopts.DevCAFile)

	if err := cl.Client.Create(ctx, &hubv1.MemberCluster{ObjectMeta: metav1.ObjectMeta{Name: "east"},
		Spec: hubv1.MemberClusterSpec{Issuer: hopts.ExternalURL + "/clusters/east", TrustDomain: "east.example"}}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var s corev1.Secret
		if cl.Client.Get(ctx, client.ObjectKey{Namespace: "anchorage-hub", Name: api.JoinTokenSecretName("east")}, &s) != nil {
			return false, nil
		}
		var mc hubv1.MemberCluster
		if err := cl.Client.Get(ctx, client.ObjectKey{Name: "east"}, &mc); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(mc.Status.Conditions, hubv1.ConditionJoined)
		return c != nil && c.Reason == hubv1.ReasonAwaitingJoin, nil
	})
	if err != nil {
		t.Fatalf("the hub, running as its ServiceAccount, made no join token and status: %v", err)
	}
}

// waitReady polls the hub's /readyz until it answers 200 "ok".
func waitReady(ctx context.Context, t *testing.T, hubURL, caFile string) {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		resp, err := hc.Get(hubURL + "/readyz")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		last = fmt.Sprintf("%d %q", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK && string(body) == "ok", nil
	})
	if err != nil {
		t.Fatalf("the hub did not become ready: /readyz last answered %s", last)
	}
}
