// Package oidcbundle builds and serves the public documents the hub
// publishes for every member cluster, under the member's service-account
// issuer <hub URL>/clusters/<cluster>, and verifies the member agents'
// service-account tokens.
//
// Member clusters point their kube-apiserver's --service-account-issuer at
// the hub, so the hub is where relying parties discover the cluster's token
// keys and, next to them, its trust anchors:
//
//	<issuer>/.well-known/openid-configuration         OIDC discovery (as kube-apiserver serves it, plus anchorage_trust_bundles_uri)
//	<issuer>/openid/v1/jwks                           the member's service-account keys
//	<issuer>/.well-known/spiffe-bundle                SPIFFE bundle of the member's anchorage.dev/spiffe anchors
//	<issuer>/.well-known/anchorage/trust-bundles      index: signer name → PEM bundle URL
//	<issuer>/.well-known/anchorage/trust-bundles/<signer-slug>.pem
//	<issuer>/.well-known/anchorage/ca/<signer-slug>/<skid-hex>.der   the AIA caIssuers target of pkg/signers
//	<hub URL>/trust-domains/<td>/bundle               SPIFFE bundle endpoint (https_web) of a whole trust domain
//
// Every document is built once per change (Store.SetMember,
// Store.SetTrustDomain) and served as pre-serialised bytes with a strong
// ETag, If-None-Match (304) support, and these types and lifetimes:
//
//	document            Content-Type                        Cache-Control
//	discovery           application/json                    public, max-age=300
//	JWKS                application/jwk-set+json            public, max-age=60
//	SPIFFE bundles      application/json                    public, max-age=min(60, refresh hint)
//	trust-bundle index  application/json                    public, max-age=60
//	PEM trust bundle    application/pem-certificate-chain   public, max-age=60
//	CA certificate      application/pkix-cert               public, max-age=3600
//	errors              application/json {"error": "..."}   no-store
//
// A member or trust domain without X.509 anchors gets a 404 for its SPIFFE
// bundle rather than an empty key set, which SPIFFE consumers would read as
// "every SVID of this trust domain is revoked"; go-spiffe's and SPIRE's
// clients fail on the 404 body and keep the bundle they have.
//
// The package is fed plain data by the hub's controllers and never imports
// a Kubernetes client. The hub authenticates agents with
// Store.VerifyAgentToken (go-oidc against the member's stored JWKS);
// ParseJWKS validates the JWKS an agent reports.
package oidcbundle
