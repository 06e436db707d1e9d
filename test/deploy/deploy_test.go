package deploy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	demoapp "github.com/anchorage-dev/anchorage/cmd/demo-workload/app"
	hubapp "github.com/anchorage-dev/anchorage/cmd/hub/app"
	agentapp "github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/agent/hubclient"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
	"github.com/anchorage-dev/anchorage/internal/manifests"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
	"github.com/anchorage-dev/anchorage/pkg/workload"
)

// deployDir is the repository's deploy/ folder.
const deployDir = "../../deploy"

// Images: every Deployment runs one of these, from this repository.
const imageRepo = "ghcr.io/anchorage-dev/anchorage/"

// placeholder is what committed inputs hold until an operator or a script
// fills them in; the binaries must refuse it.
const placeholder = "CHANGE_ME"

// The fieldManager of the test's applies.
const fieldManager = "anchorage-deploy-test"

// A rendering is the output of one kustomization.
type rendering struct {
	dir  string // the kustomization's folder under deploy/
	objs []*unstructured.Unstructured
	// kind is set for the kind overlays: images are the dev tag, loaded,
	// never pulled.
	kind bool
	// filled: rendered with the inputs a script writes, not the committed
	// placeholders.
	filled bool
}

func (r rendering) name() string {
	if r.filled {
		return r.dir + " (inputs filled)"
	}
	return r.dir
}

// Every kustomization under deploy/ renders with kustomize, applies
// server-side (the hub's CRDs first), its pods pass the restricted Pod
// Security Standard, and every container's args parse and validate with
// the flags of the binary it runs. The kind overlays are also rendered
// with the inputs kind/multi writes, as their contract says.
func TestDeploy(t *testing.T) {
	dirs := kustomizations(t)
	var renderings []rendering
	for _, dir := range dirs {
		renderings = append(renderings, rendering{dir: dir, objs: render(t, filepath.Join(deployDir, dir)), kind: isKindOverlay(dir)})
	}
	filled := fillKindInputs(t)
	for _, dir := range dirs {
		if isKindOverlay(dir) {
			renderings = append(renderings, rendering{dir: dir, objs: render(t, filepath.Join(filled, dir)), kind: true, filled: true})
		}
	}

	// What kind/multi and the README rely on.
	for _, want := range []string{"hub", "hub/crds", "hub/overlays/kind", "member", "member/overlays/kind",
		"demo/server", "demo/server/overlays/kind", "demo/client", "demo/client/overlays/kind"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("deploy/%s: no kustomization", want)
		}
	}

	for _, r := range renderings {
		t.Run("check "+r.name(), func(t *testing.T) { checkRendering(t, r) })
	}

	cl := localcluster.StartT(t, localcluster.Options{Name: "deploy"})
	ctx := t.Context()
	// The CRDs first, so that a rendering holding custom resources applies.
	crdsFirst := func(r rendering) int {
		if r.dir == "hub/crds" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(renderings, func(a, b rendering) int { return crdsFirst(a) - crdsFirst(b) })
	for _, r := range renderings {
		if err := manifests.Apply(ctx, cl.Client, fieldManager, r.objs); err != nil {
			t.Fatalf("deploy/%s: %v", r.name(), err)
		}
		for _, dep := range typed[appsv1.Deployment](t, r.objs, "Deployment") {
			admitPod(ctx, t, cl.Client, r.name(), dep)
		}
	}
}

// The bases are applied by tests and the sandbox with internal/manifests,
// which reads `resources` only: it must see what kustomize renders.
func TestBasesLoadAsRendered(t *testing.T) {
	for _, dir := range []string{"hub", "member", "demo/server", "demo/client"} {
		loaded, err := manifests.Load(filepath.Join(deployDir, dir))
		if err != nil {
			t.Fatalf("manifests.Load(deploy/%s): %v", dir, err)
		}
		rendered := render(t, filepath.Join(deployDir, dir))
		if got, want := ids(loaded), ids(rendered); !slices.Equal(got, want) {
			t.Errorf("deploy/%s: manifests.Load finds\n%s\nkustomize renders\n%s", dir, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func ids(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName()))
	}
	slices.Sort(out)
	return out
}

// kustomizations lists the folders under deploy/ holding a Kustomization
// (components are only built as part of one).
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(deployDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var k struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(raw, &k); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if k.Kind == "Component" {
			return nil
		}
		rel, err := filepath.Rel(deployDir, filepath.Dir(p))
		dirs = append(dirs, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no kustomization under %s", deployDir)
	}
	return dirs
}

func isKindOverlay(dir string) bool { return strings.HasSuffix(dir, "/overlays/kind") }

// render builds a kustomization as `kubectl kustomize` does.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy // kubectl's order: namespaces and CRDs first
	rm, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		// Through JSON: kyaml's maps hold Go ints, which unstructured
		// objects must not (their numbers are int64 or float64).
		raw, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("kustomize build %s: %v", dir, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			t.Fatalf("kustomize build %s: %v", dir, err)
		}
		objs = append(objs, u)
	}
	return objs
}

// Inputs of the kind overlays as kind/multi writes them (the contract at
// the top of each overlay's kustomization.yaml).
const (
	kindHubURL        = "https://hub.kind.test:30443"
	kindCluster       = "east"
	kindTrustDomain   = "east.anchorage.test"
	kindServerAddress = "west.kind.test"
)

// fillKindInputs copies deploy/ to a temporary folder and writes the kind
// overlays' inputs into the copy, as the contract tells scripts to.
func fillKindInputs(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "deploy")
	if err := os.CopyFS(dst, os.DirFS(deployDir)); err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM := hubServingCertificate(t)
	for file, content := range map[string]string{
		"hub/overlays/kind/hub.env":            "external-url=" + kindHubURL + "\n",
		"hub/overlays/kind/tls.crt":            string(certPEM),
		"hub/overlays/kind/tls.key":            string(keyPEM),
		"member/overlays/kind/member.env":      fmt.Sprintf("cluster-name=%s\ntrust-domain=%s\nhub-url=%s\n", kindCluster, kindTrustDomain, kindHubURL),
		"member/overlays/kind/hub-ca.crt":      string(caPEM),
		"member/overlays/kind/join-token":      "join-token-from-the-hub",
		"demo/client/overlays/kind/client.env": fmt.Sprintf("server-address=%s:30843\ndns-server-address=%s:30943\n", kindServerAddress, kindServerAddress),
	} {
		p := filepath.Join(dst, filepath.FromSlash(file))
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the kind overlay input %s is not committed (as a placeholder): %v", file, err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// hubServingCertificate is a CA and a serving certificate for the hub's
// kind URL, PEM, as a script makes them.
func hubServingCertificate(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kind hub CA"}, NotBefore: now, NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now, NotAfter: now.Add(time.Hour),
		DNSNames: []string{"hub.kind.test"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// checkRendering checks what needs no apiserver: security settings,
// disruption budgets, policies, images, and each container's args.
func checkRendering(t *testing.T, r rendering) {
	deps := typed[appsv1.Deployment](t, r.objs, "Deployment")
	pdbs := typed[policyv1.PodDisruptionBudget](t, r.objs, "PodDisruptionBudget")
	for _, np := range typed[networkingv1.NetworkPolicy](t, r.objs, "NetworkPolicy") {
		if !slices.ContainsFunc(deps, func(d *appsv1.Deployment) bool { return selects(t, &np.Spec.PodSelector, d) }) {
			t.Errorf("NetworkPolicy %s selects no pod of this rendering", np.Name)
		}
	}
	for _, dep := range deps {
		checkSecurity(t, dep)
		if replicas := dep.Spec.Replicas; replicas != nil && *replicas > 1 {
			if !slices.ContainsFunc(pdbs, func(p *policyv1.PodDisruptionBudget) bool {
				return p.Namespace == dep.Namespace && p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntValue() == 1 && selects(t, p.Spec.Selector, dep)
			}) {
				t.Errorf("Deployment %s has %d replicas and no PodDisruptionBudget with minAvailable 1", dep.Name, *replicas)
			}
		}
		for _, c := range dep.Spec.Template.Spec.Containers {
			binary := checkImage(t, r, dep, c)
			args := expandArgs(t, r.objs, dep, c)
			checkArgs(t, r, dep, binary, args)
		}
	}
}

func typed[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) []*T {
	t.Helper()
	var out []*T
	for _, o := range objs {
		if o.GetKind() != kind {
			continue
		}
		v := new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, v); err != nil {
			t.Fatalf("%s %s: %v", kind, o.GetName(), err)
		}
		out = append(out, v)
	}
	return out
}

func selects(t *testing.T, sel *metav1.LabelSelector, dep *appsv1.Deployment) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(dep.Spec.Template.Labels))
}

// checkSecurity: non-root as the images' user, no privilege, read-only
// root, the runtime's seccomp profile, requests and a memory limit.
func checkSecurity(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	ps := dep.Spec.Template.Spec.SecurityContext
	if ps == nil || !isTrue(ps.RunAsNonRoot) || !isUser(ps.RunAsUser) || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("Deployment %s: pod securityContext %+v, want runAsNonRoot, runAsUser 65532, seccompProfile RuntimeDefault", dep.Name, ps)
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		sc := c.SecurityContext
		if sc == nil || !isTrue(sc.RunAsNonRoot) || !isUser(sc.RunAsUser) || !isTrue(sc.ReadOnlyRootFilesystem) ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("Deployment %s container %s: securityContext %+v, want runAsNonRoot, runAsUser 65532, readOnlyRootFilesystem, no privilege escalation, drop ALL", dep.Name, c.Name, sc)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("Deployment %s container %s: resources %+v, want CPU and memory requests and a memory limit", dep.Name, c.Name, c.Resources)
		}
	}
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isUser(u *int64) bool { return u != nil && *u == 65532 }

// checkImage returns the binary the container runs: the last element of
// its image name, which must be this repository's.
func checkImage(t *testing.T, r rendering, dep *appsv1.Deployment, c corev1.Container) string {
	t.Helper()
	name, tag, _ := strings.Cut(c.Image, ":")
	binary := path.Base(name)
	if name != imageRepo+binary {
		t.Errorf("Deployment %s container %s: image %s is not under %s", dep.Name, c.Name, c.Image, imageRepo)
	}
	if r.kind && (tag != "dev" || c.ImagePullPolicy != corev1.PullIfNotPresent) {
		t.Errorf("Deployment %s container %s: image %s, pull policy %q; the kind overlays use the dev tag, IfNotPresent", dep.Name, c.Name, c.Image, c.ImagePullPolicy)
	}
	return binary
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandArgs expands $(VAR) in the args from the container's environment
// as the kubelet does, resolving ConfigMap references against the
// rendering (so a reference kustomize did not rename is caught).
func expandArgs(t *testing.T, objs []*unstructured.Unstructured, dep *appsv1.Deployment, c corev1.Container) []string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := configMapValue(objs, dep.Namespace, ref.Name, ref.Key)
			if !ok {
				t.Errorf("Deployment %s: env %s refers to ConfigMap %s key %s, which the rendering lacks", dep.Name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.namespace":
				env[e.Name] = dep.Namespace
			case "metadata.name":
				env[e.Name] = dep.Name + "-0"
			default:
				t.Errorf("Deployment %s: env %s: unexpected fieldRef %s", dep.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		default:
			t.Errorf("Deployment %s: env %s: unexpected source %+v", dep.Name, e.Name, e.ValueFrom)
		}
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, varRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := varRef.FindStringSubmatch(ref)[1]
			v, ok := env[name]
			if !ok {
				t.Errorf("Deployment %s: arg %q refers to $(%s), which is not in the container's env", dep.Name, a, name)
			}
			return v
		}))
	}
	return args
}

func configMapValue(objs []*unstructured.Unstructured, ns, name, key string) (string, bool) {
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetNamespace() == ns && o.GetName() == name {
			v, ok, _ := unstructured.NestedString(o.Object, "data", key)
			return v, ok
		}
	}
	return "", false
}

// options is a binary's flags.
type options interface {
	AddFlags(*pflag.FlagSet)
	Validate() error
}

// checkArgs parses args with the binary's own flags and validates them:
// with placeholders, validation must refuse them; otherwise it must pass,
// and what the flags name must be in the pod.
func checkArgs(t *testing.T, r rendering, dep *appsv1.Deployment, binary string, args []string) {
	t.Helper()
	var opts options
	switch binary {
	case "hub":
		opts = hubapp.NewOptions()
	case "member-agent":
		opts = agentapp.NewOptions()
	case "demo-workload":
		opts = demoapp.NewOptions()
	default:
		t.Errorf("Deployment %s runs %s, which this test does not know", dep.Name, binary)
		return
	}
	fs := pflag.NewFlagSet(binary, pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Errorf("Deployment %s: %s does not parse its args %q: %v", dep.Name, binary, args, err)
		return
	}
	if strings.Contains(strings.Join(args, " "), placeholder) {
		// A forgotten input fails loudly at start.
		if binary != "demo-workload" && opts.Validate() == nil {
			t.Errorf("Deployment %s: %s accepts the placeholder in %q", dep.Name, binary, args)
		}
		return
	}
	if err := opts.Validate(); err != nil {
		t.Errorf("Deployment %s: %s refuses its args %q: %v", dep.Name, binary, args, err)
		return
	}
	pod := &dep.Spec.Template.Spec
	switch o := opts.(type) {
	case *hubapp.Options:
		checkSecretFile(t, r, dep, o.TLSCertFile, "tls.crt")
		checkSecretFile(t, r, dep, o.TLSKeyFile, "tls.key")
		if o.Namespace != dep.Namespace {
			t.Errorf("Deployment %s: hub --namespace %s, want its own namespace %s", dep.Name, o.Namespace, dep.Namespace)
		}
	case *agentapp.Options:
		checkHubToken(t, dep, o)
		checkSecretFile(t, r, dep, o.HubCAFile, "ca.crt")
		if secret := findObject(r.objs, "Secret", dep.Namespace, o.JoinTokenSecret); r.kind && secret == nil {
			t.Errorf("Deployment %s: the kind overlay has no Secret %s (--join-token-secret)", dep.Name, o.JoinTokenSecret)
		} else if secret != nil {
			if _, ok, _ := unstructured.NestedString(secret.Object, "data", hubclient.JoinTokenKey); !ok {
				t.Errorf("Secret %s has no key %s", o.JoinTokenSecret, hubclient.JoinTokenKey)
			}
		}
		if r.filled && (o.ClusterName != kindCluster || o.TrustDomain != kindTrustDomain || o.HubURL != kindHubURL) {
			t.Errorf("the member.env values did not reach the agent: %+v", o)
		}
	case *demoapp.Options:
		checkDemoFiles(t, dep, pod, o)
		if r.filled && o.Mode == demoapp.ModeClient && !strings.HasPrefix(o.ServerAddress, kindServerAddress+":") {
			t.Errorf("the client.env values did not reach the client: --server-address %s", o.ServerAddress)
		}
	}
}

// mountOf returns the volume mounted at the folder holding file.
func mountOf(pod *corev1.PodSpec, file string) (*corev1.Volume, string) {
	for _, c := range pod.Containers {
		for _, m := range c.VolumeMounts {
			rel, err := filepath.Rel(m.MountPath, file)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == m.Name {
					return &pod.Volumes[i], rel
				}
			}
		}
	}
	return nil, ""
}

// checkSecretFile: file comes from a Secret volume, holding key when the
// rendering has the Secret (a base leaves some Secrets to the operator).
func checkSecretFile(t *testing.T, r rendering, dep *appsv1.Deployment, file, key string) {
	t.Helper()
	v, rel := mountOf(&dep.Spec.Template.Spec, file)
	if v == nil || v.Secret == nil || rel != key {
		t.Errorf("Deployment %s: %s is not key %s of a mounted Secret", dep.Name, file, key)
		return
	}
	secret := findObject(r.objs, "Secret", dep.Namespace, v.Secret.SecretName)
	if secret == nil {
		if r.kind {
			t.Errorf("Deployment %s: the kind overlay does not make Secret %s", dep.Name, v.Secret.SecretName)
		}
		return
	}
	if _, ok, _ := unstructured.NestedString(secret.Object, "data", key); !ok {
		t.Errorf("Secret %s has no key %s", v.Secret.SecretName, key)
	}
}

// checkHubToken: --hub-token-file is a projected service-account token
// whose audience is --hub-url, as the hub verifies it.
func checkHubToken(t *testing.T, dep *appsv1.Deployment, o *agentapp.Options) {
	t.Helper()
	v, rel := mountOf(&dep.Spec.Template.Spec, o.HubTokenFile)
	if v == nil || v.Projected == nil {
		t.Errorf("Deployment %s: --hub-token-file %s is not in a projected volume", dep.Name, o.HubTokenFile)
		return
	}
	for _, s := range v.Projected.Sources {
		if sat := s.ServiceAccountToken; sat != nil && sat.Path == rel {
			if sat.Audience != o.HubURL {
				t.Errorf("Deployment %s: the hub token's audience is %q, --hub-url is %q", dep.Name, sat.Audience, o.HubURL)
			}
			return
		}
	}
	t.Errorf("Deployment %s: no serviceAccountToken projected at %s", dep.Name, o.HubTokenFile)
}

// checkDemoFiles: every file demo-workload reads is projected into
// --credentials-dir by the source DESIGN.md names: pod certificates of the
// two signers, peer SPIFFE bundles selected by the SPIFFE
// filesystem-delivery labels, the clusterset bundle by its scope label.
func checkDemoFiles(t *testing.T, dep *appsv1.Deployment, pod *corev1.PodSpec, o *demoapp.Options) {
	t.Helper()
	v, rel := mountOf(pod, filepath.Join(o.CredentialsDir, "x"))
	if v == nil || v.Projected == nil || rel != "x" {
		t.Errorf("Deployment %s: --credentials-dir %s is not a projected volume", dep.Name, o.CredentialsDir)
		return
	}
	podCert := func(signer string) func(corev1.VolumeProjection) bool {
		return func(s corev1.VolumeProjection) bool {
			return s.PodCertificate != nil && s.PodCertificate.SignerName == signer
		}
	}
	bundle := func(signer string, want map[string]string) func(corev1.VolumeProjection) bool {
		return func(s corev1.VolumeProjection) bool {
			b := s.ClusterTrustBundle
			return b != nil && b.SignerName != nil && *b.SignerName == signer && b.LabelSelector != nil &&
				len(b.LabelSelector.MatchExpressions) == 0 && fmt.Sprint(b.LabelSelector.MatchLabels) == fmt.Sprint(want)
		}
	}
	want := map[string]func(corev1.VolumeProjection) bool{}
	peers := func(ids, tds []string) {
		for _, s := range ids {
			tds = append(tds, spiffeid.RequireFromString(s).TrustDomain().Name())
		}
		for _, td := range tds {
			want[workload.TrustBundleFileName(spiffeid.RequireTrustDomainFromString(td))] = bundle(signers.SPIFFESignerName,
				map[string]string{federation.LabelCanarying: federation.CanaryingLive, federation.LabelPeerTrustDomain: td})
		}
	}
	switch o.Mode {
	case demoapp.ModeServer:
		if o.ListenAddress != "" && o.ListenAddress != "0" {
			want[demoapp.SPIFFECredentialFile] = podCert(signers.SPIFFESignerName)
			peers(o.AllowSPIFFEIDs, o.AllowTrustDomains)
		}
		if o.DNSListenAddress != "" {
			want[demoapp.ServiceDNSCredentialFile] = podCert(signers.ServiceDNSSignerName)
		}
	case demoapp.ModeClient:
		if o.ServerAddress != "" {
			want[demoapp.SPIFFECredentialFile] = podCert(signers.SPIFFESignerName)
			peers(o.ExpectSPIFFEIDs, o.ExpectTrustDomains)
		}
		if o.DNSServerAddress != "" {
			for _, f := range o.ClustersetDNSTrustBundles {
				want[f] = bundle(signers.ServiceDNSSignerName, map[string]string{federation.LabelServiceDNSScope: federation.ScopeClusterset})
			}
			for _, f := range o.LocalDNSTrustBundles {
				want[f] = bundle(signers.ServiceDNSSignerName, map[string]string{federation.LabelServiceDNSScope: federation.ScopeCluster})
			}
		}
	}
	for file, match := range want {
		found := false
		for _, s := range v.Projected.Sources {
			if projectedPath(s) == file {
				found = true
				if !match(s) {
					t.Errorf("Deployment %s: %s is projected by %+v, not by the source DESIGN.md names", dep.Name, file, s)
				}
			}
		}
		if !found {
			t.Errorf("Deployment %s: demo-workload reads %s, which volume %s does not project", dep.Name, file, v.Name)
		}
	}
}

func projectedPath(s corev1.VolumeProjection) string {
	switch {
	case s.PodCertificate != nil:
		return s.PodCertificate.CredentialBundlePath
	case s.ClusterTrustBundle != nil:
		return s.ClusterTrustBundle.Path
	}
	return ""
}

func findObject(objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	return nil
}

// admitPod creates the Deployment's pod (dry run) in its namespace, which
// enforces the restricted Pod Security Standard, and shows the check bites:
// the same pod without its security settings is refused.
func admitPod(ctx context.Context, t *testing.T, c client.Client, name string, dep *appsv1.Deployment) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: dep.Namespace, Name: dep.Name + "-0", Labels: dep.Spec.Template.Labels},
		Spec:       *dep.Spec.Template.Spec.DeepCopy(),
	}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("deploy/%s: the pod of Deployment %s is refused: %v", name, dep.Name, err)
	}
	insecure := pod.DeepCopy()
	insecure.Spec.SecurityContext = nil
	for i := range insecure.Spec.Containers {
		insecure.Spec.Containers[i].SecurityContext = nil
	}
	if err := c.Create(ctx, insecure, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "PodSecurity") {
		t.Errorf("deploy/%s: namespace %s admits a pod without security settings (%v): label it pod-security.kubernetes.io/enforce=restricted", name, dep.Namespace, err)
	}
}
