package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anchorage-dev/anchorage/cmd/sandbox/app"
	"github.com/anchorage-dev/anchorage/internal/localcluster"
)

// The sandbox runs to the end, writes sandbox.json in exactly the
// documented shape, shows the documents the hub serves, and ends with the
// cross-cluster demo: SPIFFE mTLS and the clusterset DNS name between a
// client pod in east and a server pod in west, then a rotation of west's
// SPIFFE CA under traffic without a single failed handshake.
func TestSandboxRuns(t *testing.T) {
	localcluster.RequireAssets(t)
	dir := t.TempDir()
	var out bytes.Buffer
	res, err := app.RunWithResult(context.Background(), &app.Options{StateDir: dir}, &out)
	if err != nil {
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

	const (
		clientID = "spiffe://east.anchorage.test/ns/demo/sa/client"
		serverID = "spiffe://west.anchorage.test/ns/demo/sa/server"
		dnsName  = "echo.demo.svc.clusterset.local"
	)
	if res == nil {
		t.Fatal("no demo result")
	}
	if res.ClientID != clientID || res.ServerSawClient != clientID {
		t.Errorf("client identity: issued %q, verified by the server as %q; want %q", res.ClientID, res.ServerSawClient, clientID)
	}
	if res.ServerID != serverID || res.ClientSawServer != serverID {
		t.Errorf("server identity: issued %q, verified by the client as %q; want %q", res.ServerID, res.ClientSawServer, serverID)
	}
	if res.Answer != "echo-0: hello from client-0" {
		t.Errorf("mTLS answer %q", res.Answer)
	}
	if res.DNSName != dnsName || !slices.Contains(res.DNSNames, dnsName) || res.DNSAnswer != "echo-0: hello "+dnsName {
		t.Errorf("service DNS: verified %q, certificate names %q, answer %q", res.DNSName, res.DNSNames, res.DNSAnswer)
	}
	rot := res.Rotation
	if rot.Failures != 0 || rot.ServerHandshakeErrors != 0 || len(rot.Errors) != 0 {
		t.Errorf("rotation: %d failures, %d handshake errors on the server's side: %q", rot.Failures, rot.ServerHandshakeErrors, rot.Errors)
	}
	if rot.Handshakes < 20 || rot.LongLivedExchanges < 2 {
		t.Errorf("rotation: only %d handshakes and %d long-lived exchanges", rot.Handshakes, rot.LongLivedExchanges)
	}
	if rot.OldCA == "" || rot.NewCA == "" || rot.OldCA == rot.NewCA {
		t.Errorf("rotation: old CA %q, new CA %q", rot.OldCA, rot.NewCA)
	}
	if rot.ServerLeafCA != rot.NewCA || rot.HandshakesWithNewCA == 0 {
		t.Errorf("the server's last leaf was signed by %q, want the new CA %q (%d handshakes saw a new-CA leaf)", rot.ServerLeafCA, rot.NewCA, rot.HandshakesWithNewCA)
	}
	if !(rot.Promoted > 0 && rot.Promoted <= rot.NewLeaf && rot.NewLeaf <= rot.Took) {
		t.Errorf("rotation timings: promoted %s, new leaf %s, took %s", rot.Promoted, rot.NewLeaf, rot.Took)
	}
	for _, want := range []string{
		"the server saw " + clientID + ", the client saw " + serverID,
		"echo-0 served " + dnsName,
		fmt.Sprintf("rotation: %d handshakes, 0 failures", rot.Handshakes),
		rot.OldCA + " → " + rot.NewCA,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q\n%s", want, text)
		}
	}
	if strings.Contains(text, "issue #4") {
		t.Errorf("output still says the demo arrives with issue #4\n%s", text)
	}
}
