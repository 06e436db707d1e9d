// Package hubclient is the member agent's link to the hub: it joins once
// with the single-use join token an operator copied into a Secret, reports
// the cluster's trust anchors and service-account JWKS at a fixed interval
// and whenever a CA pool changes, and follows the hub's bundle sets with
// one long poll, applying them as ClusterTrustBundles and acking them
// (and re-applying the last answer when someone edits or deletes one). It
// never affects signing: when the hub is unreachable it keeps every bundle
// and retries with backoff and jitter while the signers carry on.
package hubclient
