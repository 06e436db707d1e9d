#!/usr/bin/env bash
# kind/multi/demo.sh: on the clusters of kind/multi/up.sh, runs the demo
# server in west (Deployment, Service and ServiceExport echo in namespace
# demo) and the demo client in east, which reaches it as
# echo.demo.svc.clusterset.local over SPIFFE mTLS with the certificates and
# federated ClusterTrustBundles anchorage gave them; shows the exchange from
# the client's log, then the hub's well-known URLs with curl.
#
# It leaves the demo running; kind/multi/down.sh deletes everything.
# Settings are in kind/multi/lib.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# apply_demo CLUSTER OVERLAY COPY: applies the demo overlay OVERLAY (in the
# deploy copy COPY) with the kind image; prints the objects applied
# (kind/name).
apply_demo() {
	local c=$1 overlay=$2 copy=$3 dir
	dir="$(write_kustomization "demo-${c}" "${copy}/${overlay}" demo-workload)"
	k "$c" apply --server-side --force-conflicts --field-manager=anchorage-kind -k "$dir" -o name
}

# wait_workloads CLUSTER OBJECTS: waits for the Deployments, StatefulSets
# and Jobs among OBJECTS (kind/name lines) in the demo namespace.
wait_workloads() {
	local c=$1 obj
	while read -r obj; do
		case "$obj" in
		deployment.apps/* | statefulset.apps/* | daemonset.apps/*)
			k "$c" -n "$DEMO_NAMESPACE" rollout status "$obj" --timeout="${WAIT_TIMEOUT}s" | sed 's/^/    /'
			;;
		esac
	done <<<"$2"
}

# first_workload OBJECTS: the first Deployment, StatefulSet, Job or Pod.
first_workload() {
	grep -E '^(deployment\.apps|statefulset\.apps|daemonset\.apps|job\.batch|pod)/' <<<"$1" | head -n 1
}

log_shows_success() {
	k "$1" -n "$DEMO_NAMESPACE" logs "$2" --all-containers --tail=-1 2>/dev/null | grep -qE "$DEMO_SUCCESS_PATTERN"
}

hub_curl() {
	curl -sS --fail --cacert "$HUB_CA_FILE" --connect-to "${HUB_HOST}:${HUB_NODE_PORT}:127.0.0.1:${HUB_HOST_PORT}" "$@"
}

# show_url URL: prints the curl command a user can run, then its answer.
show_url() {
	printf '\n$ curl --cacert %s --connect-to %s %s\n' "$HUB_CA_FILE" "${HUB_HOST}:${HUB_NODE_PORT}:127.0.0.1:${HUB_HOST_PORT}" "$1"
	if command -v jq >/dev/null 2>&1; then
		hub_curl "$1" | jq .
	else
		hub_curl "$1"
		printf '\n'
	fi
}

step "checking prerequisites"
need_docker
need_kind
need_kubectl
need curl "Install curl: demo.sh shows the hub's well-known URLs with it."
[[ -f "$KUBECONFIG_FILE" && -f "$HUB_CA_FILE" ]] || die "no kind/multi state in ${STATE_DIR}: run kind/multi/up.sh first"
load_hub
for c in $(all_clusters); do
	cluster_exists "$c" || die "kind cluster $(kind_name "$c") does not exist: run kind/multi/up.sh first"
done
for o in "$DEMO_SERVER_OVERLAY" "$DEMO_CLIENT_OVERLAY"; do
	[[ -f "${REPO_ROOT}/deploy/${o}/kustomization.yaml" ]] || die "deploy/${o} is missing: the demo's kind overlays (server for west, client for east) are expected there"
done
demo_deploy="$(deploy_copy demo)"
# The client calls the server by its clusterset name, which the members'
# CoreDNS answers (below): the committed client.env says the same, written
# here so that the demo does not depend on it.
printf 'server-address=%s.%s.svc.clusterset.local:%s\ndns-server-address=%s.%s.svc.clusterset.local:%s\n' \
	"$DEMO_SERVICE" "$DEMO_NAMESPACE" "$DEMO_SPIFFE_PORT" "$DEMO_SERVICE" "$DEMO_NAMESPACE" "$DEMO_DNS_PORT" \
	>"${demo_deploy}/${DEMO_CLIENT_OVERLAY}/client.env"

step "demo image ${DEMO_IMAGE}"
if [[ "$BUILD_IMAGES" == 1 ]] || ! docker image inspect "$DEMO_IMAGE" >/dev/null 2>&1; then
	need make "Install make, or build ${DEMO_IMAGE} yourself."
	make -C "$REPO_ROOT" images IMAGE_REPO="$IMAGE_REPO" IMAGE_TAG="$IMAGE_TAG" ||
		die "'make images' failed; build ${DEMO_IMAGE} and rerun"
fi
for m in "$DEMO_SERVER_CLUSTER" "$DEMO_CLIENT_CLUSTER"; do
	kind load docker-image "$DEMO_IMAGE" --name "$(kind_name "$m")" | sed 's/^/    /'
done

step "server in ${DEMO_SERVER_CLUSTER} (deploy/${DEMO_SERVER_OVERLAY})"
server_objects="$(apply_demo "$DEMO_SERVER_CLUSTER" "$DEMO_SERVER_OVERLAY" "$demo_deploy")"
printf '%s\n' "$server_objects" | sed 's/^/    /'
wait_workloads "$DEMO_SERVER_CLUSTER" "$server_objects"
wait_until "ServiceExport ${DEMO_NAMESPACE}/${DEMO_SERVICE} in ${DEMO_SERVER_CLUSTER}" "$WAIT_TIMEOUT" \
	k "$DEMO_SERVER_CLUSTER" -n "$DEMO_NAMESPACE" get "serviceexports.multicluster.x-k8s.io/${DEMO_SERVICE}"

step "clusterset.local names in the members' CoreDNS, from every ServiceExport"
entries="$(clusterset_entries)"
[[ -n "$entries" ]] || die "no exported Service with a cluster IP in any member"
printf '%s\n' "$entries" | sed 's/^/    /'
for m in $MEMBERS; do
	set_clusterset_dns "$m" "$entries"
	info "${m}: CoreDNS restarted with the entries above"
done

step "client in ${DEMO_CLIENT_CLUSTER} (deploy/${DEMO_CLIENT_OVERLAY})"
client_objects="$(apply_demo "$DEMO_CLIENT_CLUSTER" "$DEMO_CLIENT_OVERLAY" "$demo_deploy")"
printf '%s\n' "$client_objects" | sed 's/^/    /'
wait_workloads "$DEMO_CLIENT_CLUSTER" "$client_objects"
client="$(first_workload "$client_objects")"
[[ -n "$client" ]] || die "deploy/${DEMO_CLIENT_OVERLAY} applied no Deployment, StatefulSet, DaemonSet, Job or Pod"
server="$(first_workload "$server_objects")"

step "the mTLS exchange, from the client's log (waiting for '${DEMO_SUCCESS_PATTERN}')"
start=$SECONDS
until log_shows_success "$DEMO_CLIENT_CLUSTER" "$client"; do
	if ((SECONDS - start >= WAIT_TIMEOUT)); then
		k "$DEMO_CLIENT_CLUSTER" -n "$DEMO_NAMESPACE" logs "$client" --all-containers --tail=40 2>&1 | sed 's/^/    /' || true
		die "the client's log does not show '${DEMO_SUCCESS_PATTERN}' after ${WAIT_TIMEOUT}s (its last lines are above). Check the pods' certificates ('kubectl get podcertificaterequests -n ${DEMO_NAMESPACE}'), the federated bundles ('kubectl get clustertrustbundles') and the hub ('kubectl get memberclusters')"
	fi
	sleep 2
done
printf '$ kubectl --context kind-%s -n %s logs %s --tail=20\n' "$(kind_name "$DEMO_CLIENT_CLUSTER")" "$DEMO_NAMESPACE" "$client"
k "$DEMO_CLIENT_CLUSTER" -n "$DEMO_NAMESPACE" logs "$client" --all-containers --tail=20 | sed 's/^/    /'
if [[ -n "$server" ]]; then
	printf '\n$ kubectl --context kind-%s -n %s logs %s --tail=10\n' "$(kind_name "$DEMO_SERVER_CLUSTER")" "$DEMO_NAMESPACE" "$server"
	k "$DEMO_SERVER_CLUSTER" -n "$DEMO_NAMESPACE" logs "$server" --all-containers --tail=10 | sed 's/^/    /' || true
fi

step "the trust behind it"
printf '$ kubectl --context kind-%s get clustertrustbundles\n' "$(kind_name "$DEMO_CLIENT_CLUSTER")"
k "$DEMO_CLIENT_CLUSTER" get clustertrustbundles | sed 's/^/    /'
printf '\n$ kubectl --context kind-%s get memberclusters\n' "$(kind_name "$HUB_CLUSTER")"
k "$HUB_CLUSTER" get memberclusters | sed 's/^/    /'

step "the hub's well-known URLs for ${DEMO_SERVER_CLUSTER} (issuer $(issuer "$DEMO_SERVER_CLUSTER"))"
show_url "$(issuer "$DEMO_SERVER_CLUSTER")/.well-known/openid-configuration"
show_url "$(issuer "$DEMO_SERVER_CLUSTER")/openid/v1/jwks"
show_url "$(issuer "$DEMO_SERVER_CLUSTER")/.well-known/spiffe-bundle"
show_url "${HUB_URL}/trust-domains/$(trust_domain "$DEMO_SERVER_CLUSTER")/bundle"

step "done"
cat <<EOF
    The demo keeps running. Rotate west's SPIFFE CA under traffic and watch
    the client keep connecting (docs/rotate-ca.md):
      go run ./cmd/member-agent ca rotate --signer spiffe --kubeconfig ${STATE_DIR}/${DEMO_SERVER_CLUSTER}.kubeconfig
      go run ./cmd/member-agent ca status --kubeconfig ${STATE_DIR}/${DEMO_SERVER_CLUSTER}.kubeconfig
    Tear down: kind/multi/down.sh
EOF
