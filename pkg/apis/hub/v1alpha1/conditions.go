package v1alpha1

// Condition types.
const (
	// ConditionJoined (MemberCluster): the member's agent has redeemed its
	// join token; from then on it authenticates with service-account tokens.
	ConditionJoined = "Joined"
	// ConditionReady (MemberCluster): the agent reports and has applied the
	// current federated bundle set. (TrustDomain): the hub holds a good bundle
	// of the trust domain.
	ConditionReady = "Ready"
)

// Condition reasons of a MemberCluster.
const (
	// ReasonJoined: Joined=True.
	ReasonJoined = "Joined"
	// ReasonAwaitingJoin: Joined=False; a join token is waiting in the hub's
	// namespace for the agent's first call.
	ReasonAwaitingJoin = "AwaitingJoin"
	// ReasonJoinTokenExpired: Joined=False; the join token expired (24 h)
	// before the agent used it.
	ReasonJoinTokenExpired = "JoinTokenExpired"

	// ReasonReporting: Ready=True; the agent reports and has acked the
	// current bundle set.
	ReasonReporting = "Reporting"
	// ReasonNotJoined: Ready=False because Joined is not True.
	ReasonNotJoined = "NotJoined"
	// ReasonReportStale: Ready=False; the agent has not reported for too long.
	ReasonReportStale = "ReportStale"
	// ReasonBundleSetPending: Ready=False; the agent has not acked the
	// current bundle set yet.
	ReasonBundleSetPending = "BundleSetPending"
)

// Condition reasons of a TrustDomain.
const (
	// ReasonBundleFetched: Ready=True; the last fetch returned a good bundle.
	ReasonBundleFetched = "BundleFetched"
	// ReasonFetchFailed: Ready=False; the last fetch failed
	// (status.lastFetchError says why). Fail-static: the hub keeps serving
	// and pushing status.bundle, the last good one; Ready=False makes the
	// failure visible without dropping trust.
	ReasonFetchFailed = "FetchFailed"
	// ReasonInvalidBundle: the endpoint (or spec.bootstrapBundle) returned a
	// bundle that does not parse or is not for spec.trustDomain.
	ReasonInvalidBundle = "InvalidBundle"
)

// ReasonInvalidSpec: Ready=False on either kind; the spec fails a check the
// schema cannot express. The message says what to change.
const ReasonInvalidSpec = "InvalidSpec"
