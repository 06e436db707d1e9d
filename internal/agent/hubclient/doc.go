// Package hubclient is the member agent's link to the hub: it joins once
// with the single-use join token an operator copied into a Secret, then
// reports the cluster's trust anchors and service-account JWKS at a fixed
// interval. It never affects signing: when the hub is unreachable it
// retries with backoff and jitter while the signers carry on.
package hubclient
