// Package signers holds anchorage's certificate authority: the CA pool of a
// signer (CAs in states next, active and retired), the certificate profiles
// of the anchorage.dev/spiffe and anchorage.dev/service-dns signers, and the
// embedding of the member cluster's OIDC issuer URL in every certificate.
//
// It is pure crypto: it never imports a Kubernetes client. Templates are
// built apart from signing (after SPIRE's credtemplate), and the clock,
// randomness and serial numbers come from an Env so that tests can fix them.
package signers
