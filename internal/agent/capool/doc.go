// Package capool keeps each signer's CA pool in a Secret of the agent's
// namespace: it creates the pool on first start (generated, or imported
// from an operator's key and chain), loads it, follows changes to the
// Secret, and hands the current pool to the signers and the trust-bundle
// publisher. Rotation carries out the operator's requests on the Secret
// (`member-agent ca rotate|promote|abort`) and promotes a next CA once
// every member trusting this cluster has applied it.
package capool
