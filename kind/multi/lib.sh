# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings are used by the scripts that source this file
#
# Settings and helpers shared by kind/multi/up.sh, demo.sh and down.sh.
# Sourced, never run. Every assumption about names, paths and versions is in
# the first section; the variables marked "env" can be overridden from the
# environment.
#
# Written for bash 3.2 too (the macOS default): no associative arrays, no
# mapfile, no ${x,,}.

# ---- settings ---------------------------------------------------------------

# Kubernetes 1.37 node image (Pod Certificates and ClusterTrustBundles are GA
# and on by default; kind renders kubeadm's v1beta4 config for 1.36+). This is
# kind v0.33.0's own default image, pinned by digest. env.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5}"
# The oldest kind that renders kubeadm v1beta4 for 1.36+ and merges
# kubeadmConfigPatches' extraArgs the way the member configs expect.
KIND_MIN_VERSION="0.33.0"

# kind cluster names are <prefix>-hub, <prefix>-east, <prefix>-west; the hub
# and member ids (MemberCluster names, --cluster-name) are hub, east, west. env.
CLUSTER_PREFIX="${CLUSTER_PREFIX:-anchorage}"
HUB_CLUSTER="hub"
# The members. Each has a kind config <name>.kind.yaml beside this file.
MEMBERS="east west"
# Member trust domains are <member>.<suffix> (as in the sandbox). env.
TRUST_DOMAIN_SUFFIX="${TRUST_DOMAIN_SUFFIX:-anchorage.test}"

# The hub is reached at https://<hub node's address on the kind network>:
# <node port>: the hub Service is a NodePort (deploy/hub/overlays/kind), and
# the members' issuers are <hub URL>/clusters/<member>. up.sh learns the
# address once the hub cluster exists and keeps the URL in the state
# (load_hub). The host reaches the same port through the hub node's
# extraPortMappings on 127.0.0.1:HUB_HOST_PORT. env for the host port only.
HUB_NODE_PORT="30443"
HUB_HOST_PORT="${HUB_HOST_PORT:-30443}"

# Images, as `make images` tags them. env.
IMAGE_REPO="${IMAGE_REPO:-ghcr.io/anchorage-dev/anchorage}"
IMAGE_TAG="${IMAGE_TAG:-dev}"
HUB_IMAGE="${IMAGE_REPO}/hub:${IMAGE_TAG}"
AGENT_IMAGE="${IMAGE_REPO}/member-agent:${IMAGE_TAG}"
DEMO_IMAGE="${IMAGE_REPO}/demo-workload:${IMAGE_TAG}"
# The image names in deploy/; up.sh and demo.sh rewrite them to
# ${IMAGE_REPO}/<name>:${IMAGE_TAG}.
MANIFEST_IMAGE_REPO="ghcr.io/anchorage-dev/anchorage"
# Build the images with `make images` even when they exist: BUILD_IMAGES=1. env.
BUILD_IMAGES="${BUILD_IMAGES:-0}"

# The kind overlays, relative to deploy/. Their input contract (at the top
# of each kustomization.yaml): copy deploy/, write the input files into the
# copy, apply the copy. up.sh and demo.sh do that in STATE_DIR, one copy
# per cluster.
HUB_OVERLAY="hub/overlays/kind"                 # inputs: hub.env, tls.crt, tls.key
MEMBER_OVERLAY="member/overlays/kind"           # inputs: member.env, hub-ca.crt, join-token
DEMO_SERVER_OVERLAY="demo/server/overlays/kind" # no inputs
DEMO_CLIENT_OVERLAY="demo/client/overlays/kind" # input: client.env
# Names the scripts wait on and read (deploy/hub/base, deploy/member/base).
HUB_NAMESPACE="anchorage-hub"
HUB_DEPLOYMENT="hub"
HUB_SERVICE="hub"
AGENT_NAMESPACE="anchorage-system"
AGENT_DEPLOYMENT="member-agent"

# The demo (deploy/demo): in west, Deployment, Service and ServiceExport
# `echo` in namespace `demo` (SPIFFE mTLS on port 8443, service-dns TLS on
# 9443); in east, Deployment `echo-client`, which calls
# echo.demo.svc.clusterset.local on both ports. demo.sh waits until the
# client's log shows DEMO_SUCCESS_PATTERN (an extended regular expression):
# demo-workload's "Exchange" line names the server's verified SPIFFE ID in
# its "server" field (its start-up line names the expected IDs, hence the
# field name in the pattern). env.
DEMO_SERVER_CLUSTER="west"
DEMO_CLIENT_CLUSTER="east"
DEMO_NAMESPACE="demo"
DEMO_SERVICE="echo"
DEMO_SPIFFE_PORT="8443"
DEMO_DNS_PORT="9443"
DEMO_SUCCESS_PATTERN="${DEMO_SUCCESS_PATTERN:-\"server\": ?\"spiffe://west[.]${TRUST_DOMAIN_SUFFIX}/}"

# How long each wait may take, in seconds. env.
WAIT_TIMEOUT="${WAIT_TIMEOUT:-300}"

# Keep the clusters when a script fails (and make down.sh a no-op). env.
NO_TEAR_DOWN="${NO_TEAR_DOWN:-0}"

# Where up.sh keeps what the other scripts need: the kubeconfig of the three
# clusters, the hub's CA and serving certificate, rendered kind configs and
# kustomizations. env.
KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "${KIND_DIR}/../.." && pwd -P)"
STATE_DIR="${STATE_DIR:-${KIND_DIR}/.state}"
case "$STATE_DIR" in /*) ;; *) STATE_DIR="${PWD}/${STATE_DIR}" ;; esac
KUBECONFIG_FILE="${STATE_DIR}/kubeconfig"
HUB_CA_FILE="${STATE_DIR}/hub-tls/ca.crt"
HUB_URL_FILE="${STATE_DIR}/hub-url"

# CoreDNS: the clusterset.local server block up.sh adds to each member's
# Corefile sits between these two lines (kept free of sed's special
# characters: they are sed addresses).
CLUSTERSET_DNS_BEGIN="# anchorage-kind clusterset.local begin"
CLUSTERSET_DNS_END="# anchorage-kind clusterset.local end"

# ---- output -----------------------------------------------------------------

STARTED_AT=$SECONDS

# step prints a progress line with the time since the script started.
step() { printf '\n==> [%3ds] %s\n' "$((SECONDS - STARTED_AT))" "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# ---- prerequisites ----------------------------------------------------------

# need CMD HOW: stop unless CMD is installed, saying how to install it.
need() {
	command -v "$1" >/dev/null 2>&1 || die "$1 is not installed. $2"
}

need_docker() {
	need docker "Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop."
	docker info >/dev/null 2>&1 || die "the Docker engine is not running or not reachable ('docker info' fails). Start it (Docker Desktop, or 'sudo systemctl start docker') and make sure your user may use its socket (the 'docker' group)."
}

need_kind() {
	need kind "Install kind v${KIND_MIN_VERSION} or newer: 'go install sigs.k8s.io/kind@v${KIND_MIN_VERSION}' or https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
	local have
	have="$(kind version 2>/dev/null | sed -n 's/^kind v\{0,1\}\([0-9][0-9.]*\).*/\1/p')"
	if [[ -z "$have" ]]; then
		warn "could not read the kind version ('kind version'); kind v${KIND_MIN_VERSION} or newer is needed"
	elif ! version_at_least "$have" "$KIND_MIN_VERSION"; then
		die "kind v${have} is too old: v${KIND_MIN_VERSION} or newer is needed for Kubernetes 1.37 node images and kubeadm v1beta4 ('go install sigs.k8s.io/kind@v${KIND_MIN_VERSION}')"
	fi
}

need_kubectl() {
	need kubectl "Install kubectl (https://kubernetes.io/docs/tasks/tools/), ideally v1.37; it needs 'apply -k' (kustomize), built in since v1.14."
}

# version_at_least HAVE WANT: whether dotted version HAVE >= WANT.
version_at_least() {
	local IFS=.
	# shellcheck disable=SC2206  # split on dots on purpose
	local h=($1) w=($2) i
	for i in 0 1 2; do
		if ((${h[i]:-0} > ${w[i]:-0})); then return 0; fi
		if ((${h[i]:-0} < ${w[i]:-0})); then return 1; fi
	done
	return 0
}

# ---- clusters ---------------------------------------------------------------

# kind_name CLUSTER: the kind cluster name of hub, east or west.
kind_name() { printf '%s-%s\n' "$CLUSTER_PREFIX" "$1"; }

# k CLUSTER ARGS...: kubectl against hub, east or west.
k() {
	local c=$1
	shift
	kubectl --kubeconfig "$KUBECONFIG_FILE" --context "kind-$(kind_name "$c")" "$@"
}

# cluster_exists CLUSTER
cluster_exists() {
	kind get clusters 2>/dev/null | grep -qx "$(kind_name "$1")"
}

# shellcheck disable=SC2086  # MEMBERS is a space-separated list
all_clusters() { printf '%s\n' "$HUB_CLUSTER" $MEMBERS; }

trust_domain() { printf '%s.%s\n' "$1" "$TRUST_DOMAIN_SUFFIX"; }

issuer() { printf '%s/clusters/%s\n' "$HUB_URL" "$1"; }

# load_hub: HUB_URL and HUB_HOST from the state up.sh wrote.
load_hub() {
	[[ -s "$HUB_URL_FILE" ]] || die "no hub URL in ${HUB_URL_FILE}: run kind/multi/up.sh first"
	HUB_URL="$(cat "$HUB_URL_FILE")"
	HUB_HOST="${HUB_URL#https://}"
	HUB_HOST="${HUB_HOST%%:*}"
}

# kind_config_value CLUSTER KEY: a value of the cluster's kind config file
# (podSubnet, serviceSubnet), so that the CIDRs are written in one place.
kind_config_value() {
	sed -n "s/^ *$2: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *\$/\1/p" "${KIND_DIR}/$1.kind.yaml" | head -n 1
}

# nodes CLUSTER: "name podCIDR internalIP" per node.
nodes() {
	k "$1" get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'
}

# wait_until WHAT SECONDS CMD...: retry CMD every 2 s until it succeeds.
wait_until() {
	local what=$1 timeout=$2 start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= timeout)); then
			die "timed out after ${timeout}s waiting for ${what}"
		fi
		sleep 2
	done
}

# ---- kustomize --------------------------------------------------------------

# relpath FROM_DIR TO: TO relative to FROM_DIR (both absolute): kustomize
# refuses absolute paths in resources.
relpath() {
	local from=$1 to=$2 up=""
	while [[ "$to" != "$from" && "$to" != "${from%/}/"* ]]; do
		from="$(dirname "$from")"
		up="../${up}"
	done
	local rest="${to#"$from"}"
	rest="${rest#/}"
	printf '%s\n' "${up}${rest:-.}"
}

# deploy_copy NAME: a fresh copy of deploy/ for NAME in the state; prints
# its path. The kind overlays' inputs are written into the copy, never into
# the work tree.
deploy_copy() {
	local dst="${STATE_DIR}/deploy-$1"
	rm -rf "$dst"
	cp -R "${REPO_ROOT}/deploy" "$dst"
	printf '%s\n' "$dst"
}

# write_kustomization NAME DIR COMPONENT: STATE_DIR/kustomize/NAME, which
# applies DIR (an overlay in a deploy copy) with the image of COMPONENT as
# ${IMAGE_REPO}/COMPONENT:${IMAGE_TAG}; prints its folder.
write_kustomization() {
	local out="${STATE_DIR}/kustomize/$1"
	mkdir -p "$out"
	cat >"${out}/kustomization.yaml" <<EOF
# Generated by kind/multi: ${2#"${STATE_DIR}/"} with the image ${IMAGE_REPO}/${3}:${IMAGE_TAG}.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(relpath "$out" "$2")
images:
- name: ${MANIFEST_IMAGE_REPO}/${3}
  newName: ${IMAGE_REPO}/${3}
  newTag: "${IMAGE_TAG}"
EOF
	printf '%s\n' "$out"
}

# apply_k CLUSTER ARGS...: server-side apply, output indented.
apply_k() {
	local c=$1
	shift
	k "$c" apply --server-side --force-conflicts --field-manager=anchorage-kind "$@" | sed 's/^/    /'
}

# ---- clusterset.local DNS ---------------------------------------------------

# set_clusterset_dns CLUSTER ENTRIES: (re)writes the clusterset.local block
# of CLUSTER's CoreDNS with ENTRIES, lines of "IP NAME" (hosts file format),
# and restarts CoreDNS. See kind/multi/README.md for why a hosts block.
set_clusterset_dns() {
	local c=$1 entries=$2 current file
	mkdir -p "${STATE_DIR}/coredns"
	file="${STATE_DIR}/coredns/Corefile.${c}"
	current="$(k "$c" -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')"
	{
		printf '%s\n' "$current" | sed "/^${CLUSTERSET_DNS_BEGIN}\$/,/^${CLUSTERSET_DNS_END}\$/d"
		printf '%s\n' "$CLUSTERSET_DNS_BEGIN" 'clusterset.local:53 {' '    errors' '    hosts {'
		if [[ -n "$entries" ]]; then
			printf '%s\n' "$entries" | sed '/^$/d; s/^/        /'
		fi
		printf '%s\n' '        ttl 5' '    }' '}' "$CLUSTERSET_DNS_END"
	} >"$file"
	k "$c" -n kube-system create configmap coredns --from-file=Corefile="$file" --dry-run=client -o yaml |
		k "$c" replace -f - >/dev/null
	k "$c" -n kube-system rollout restart deployment/coredns >/dev/null
	k "$c" -n kube-system rollout status deployment/coredns --timeout="${WAIT_TIMEOUT}s" >/dev/null
}

# clusterset_entries: "ClusterIP <svc>.<ns>.svc.clusterset.local" for every
# ServiceExport of every member whose Service has a cluster IP.
clusterset_entries() {
	local m ns name ip
	for m in $MEMBERS; do
		while read -r ns name; do
			[[ -n "$name" ]] || continue
			ip="$(k "$m" -n "$ns" get service "$name" -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)"
			case "$ip" in
			"") warn "ServiceExport ${ns}/${name} in ${m} has no Service yet: skipped" ;;
			None) warn "ServiceExport ${ns}/${name} in ${m} is headless: headless clusterset names are not served by this kind setup" ;;
			*) printf '%s %s.%s.svc.clusterset.local\n' "$ip" "$name" "$ns" ;;
			esac
		done < <(k "$m" get serviceexports.multicluster.x-k8s.io -A -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')
	done
}
