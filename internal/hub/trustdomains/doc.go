// Package trustdomains is the hub controller of TrustDomain
// (hub.anchorage.dev/v1alpha1): it polls each foreign trust domain's SPIFFE
// bundle endpoint with go-spiffe's federation client and keeps the last good
// bundle in status, so that members can federate with it.
//
// # Polling
//
// The controller polls as SPIRE's server polls a federated trust domain
// (pkg/server/bundle/client): the refresh hint is the bundle's
// spiffe_refresh_hint, or DefaultRefreshHint (5 minutes) when it has none,
// clamped to [MinRefreshHint, MaxRefreshHint] (SPIRE's floor is 1 minute; it
// has no ceiling, ours defaults to 1 hour so that a huge or overflowing hint
// cannot stop polling), and the next poll is a quarter of it
// (AttemptsPerRefreshHint = 4), so a change is seen well within one hint:
// the 5-minute default polls every 75 s, the 1-minute floor every 15 s.
//
// A failed fetch is retried with exponential backoff from RetryBase, never
// later than the regular poll interval. SPIRE does not refetch early after a
// failure; the hub does, because a failure is reported to users as
// Ready=False.
//
// # Status
//
// A successful fetch writes status.bundle (the bundle as go-spiffe marshals
// it), status.bundleTrustDomain (whose bundle it is: the document does not
// say), status.sequenceNumber, status.refreshHint (seconds, as served) and
// Ready=True, reason BundleFetched. A failure keeps status.bundle, the last
// good bundle, untouched (unless it is another trust domain's: it is then
// dropped), sets Ready=False with reason FetchFailed (no answer: the endpoint
// could not be reached, timed out, or its body could not be read) or
// InvalidBundle (an answer that is not a good bundle: it does not parse, is
// empty or holds an authority of another trust domain; or
// spec.bootstrapBundle does not parse), writes the error to
// status.lastFetchError and records a Warning Event. A spec that fails
// (*TrustDomain).Validate is InvalidSpec and is not polled.
//
// Status is written only when something in it changes: polls that fetch the
// same bundle write nothing. status.lastFetchTime is therefore the time of the
// last fetch that changed the status (a new bundle, a first failure, a
// recovery), not of every poll; writing it on every poll would cost one
// apiserver write per trust domain per poll for no information.
//
// # https_spiffe
//
// With profile https_spiffe the endpoint's X509-SVID is verified against the
// bundle of endpointSPIFFEID's trust domain: when that is spec.trustDomain
// (a self-serving endpoint, as SPIRE's), the last good bundle in status, else
// spec.bootstrapBundle; when it is another trust domain, the status bundle of
// the TrustDomain object for that trust domain.
//
// The controller is leader-elected: only one hub replica polls.
package trustdomains
