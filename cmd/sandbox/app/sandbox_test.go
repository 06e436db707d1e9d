package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anchorage-dev/anchorage/cmd/sandbox/app"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

// The sandbox runs to the end, writes sandbox.json in exactly the
// documented shape, and shows the documents the hub serves.
func TestSandboxRuns(t *testing.T) {
	localcluster.RequireAssets(t)
	dir := t.TempDir()
	var out bytes.Buffer
	if err := app.Run(context.Background(), &app.Options{StateDir: dir}, &out); err != nil {
		t.Fatalf("sandbox: %v\n%s", err, out.String())
	}
	raw, err := os.ReadFile(filepath.Join(dir, "sandbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st app.State
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("sandbox.json: %v\n%s", err, raw)
	}
	var keys map[string]any
	_ = json.Unmarshal(raw, &keys)
	for _, k := range []string{"hubURL", "hubCAFile", "hubKubeconfig", "members"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("sandbox.json lacks %q", k)
		}
	}
	if !strings.HasPrefix(st.HubURL, "https://127.0.0.1:") || len(st.Members) != 2 || st.Members[0].Name != "east" || st.Members[1].Name != "west" {
		t.Errorf("sandbox.json: %+v", st)
	}
	for _, p := range append([]string{st.HubCAFile, st.HubKubeconfig}, st.Members[0].Kubeconfig, st.Members[1].Kubeconfig) {
		if !filepath.IsAbs(p) {
			t.Errorf("%s is not an absolute path", p)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if st.Members[0].Issuer != st.HubURL+"/clusters/east" || st.Members[0].TrustDomain != "east.anchorage.test" || st.Members[1].TrustDomain != "west.anchorage.test" {
		t.Errorf("members: %+v", st.Members)
	}
	text := out.String()
	for _, want := range []string{
		`"issuer":"` + st.HubURL + `/clusters/east"`,
		`"use":"x509-svid"`,
		"-----BEGIN CERTIFICATE-----",
		"$ curl --cacert " + st.HubCAFile + " " + st.HubURL + "/clusters/east/.well-known/spiffe-bundle",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q\n%s", want, text)
		}
	}
}
