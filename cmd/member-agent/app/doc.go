// Package app wires the member agent: flags (Options), the controller
// manager, the CA pool store, one PodCertificateRequest controller per
// signer, the local trust-bundle publisher, metrics and health probes.
package app
