package app_test

import (
	"slices"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Every other test in this package runs the agent with the member-agent
// ServiceAccount's own token, which shows deploy/member's RBAC suffices.
// This one shows it grants nothing beyond what the agent needs.
func TestRBACIsLeastPrivilege(t *testing.T) {
	e := newEnv(t)
	user := "system:serviceaccount:anchorage-system:member-agent"

	can := func(attrs authzv1.ResourceAttributes) bool {
		t.Helper()
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:anchorage-system", "system:authenticated"},
			ResourceAttributes: &attrs,
		}}
		if err := e.c.Create(e.ctx, sar); err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	signer := func(verb, name string) authzv1.ResourceAttributes {
		return authzv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Verb: verb, Name: name}
	}
	for _, tc := range []struct {
		what  string
		attrs authzv1.ResourceAttributes
		want  bool
	}{
		{"sign for anchorage.dev/spiffe", signer("sign", "anchorage.dev/spiffe"), true},
		{"attest for anchorage.dev/service-dns", signer("attest", "anchorage.dev/service-dns"), true},
		{"update request status", authzv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Subresource: "status", Verb: "update", Namespace: "any"}, true},
		{"read its CA pool", authzv1.ResourceAttributes{Resource: "secrets", Verb: "get", Namespace: "anchorage-system", Name: "anchorage-ca-spiffe"}, true},
		{"read its join token", authzv1.ResourceAttributes{Resource: "secrets", Verb: "get", Namespace: "anchorage-system", Name: "anchorage-join-token"}, true},

		{"sign for a Kubernetes signer", signer("sign", "kubernetes.io/kube-apiserver-client-pod"), false},
		{"sign for another anchorage.dev signer", signer("sign", "anchorage.dev/other"), false},
		{"sign for every anchorage.dev signer", signer("sign", "anchorage.dev/*"), false},
		{"approve CSRs", signer("approve", "anchorage.dev/spiffe"), false},
		{"create requests", authzv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Verb: "create", Namespace: "any"}, false},
		{"change request specs", authzv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "podcertificaterequests", Verb: "update", Namespace: "any"}, false},
		{"read Secrets elsewhere", authzv1.ResourceAttributes{Resource: "secrets", Verb: "get", Namespace: "default"}, false},
		{"delete its CA pool", authzv1.ResourceAttributes{Resource: "secrets", Verb: "delete", Namespace: "anchorage-system"}, false},
		{"write pods", authzv1.ResourceAttributes{Resource: "pods", Verb: "update", Namespace: "default"}, false},
		{"write Services", authzv1.ResourceAttributes{Resource: "services", Verb: "create", Namespace: "default"}, false},
		{"write ServiceExports", authzv1.ResourceAttributes{Group: "multicluster.x-k8s.io", Resource: "serviceexports", Verb: "create", Namespace: "default"}, false},
		{"take other leases", authzv1.ResourceAttributes{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: "kube-system"}, false},
		{"grant itself more", authzv1.ResourceAttributes{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "create"}, false},
	} {
		if got := can(tc.attrs); got != tc.want {
			t.Errorf("%s: allowed=%v, want %v", tc.what, got, tc.want)
		}
	}

	var cr rbacv1.ClusterRole
	if err := e.c.Get(e.ctx, client.ObjectKey{Name: "anchorage-member-agent"}, &cr); err != nil {
		t.Fatal(err)
	}
	for _, r := range cr.Rules {
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") || slices.Contains(r.ResourceNames, "anchorage.dev/*") {
			t.Errorf("wildcard in rule %+v", r)
		}
	}
}
