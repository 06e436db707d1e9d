// Package pcrsigner is the PodCertificateRequest controller shared by
// anchorage's signers. It owns the rules every signer must follow (only
// Deny what can never succeed, never Deny or Fail for a transient reason,
// write status once, only for its own signer name) and leaves what a
// certificate says to a Profile.
package pcrsigner
