#!/usr/bin/env bash
# kind/multi/up.sh: a hub cluster and two member clusters, east and west, in
# kind on one machine, networked together, with the hub and the member
# agents deployed from deploy/'s kind overlays and both members joined to
# the hub. Then run kind/multi/demo.sh; kind/multi/down.sh deletes
# everything.
#
# If it fails, it deletes the clusters it created, unless NO_TEAR_DOWN=1.
# Settings (names, images, paths) are in kind/multi/lib.sh;
# kind/multi/README.md explains the networking and DNS choices.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Clusters this run created: a failure deletes these and no others.
CREATED=""

diagnose() {
	local c
	for c in $CREATED; do
		printf '\n--- %s: pods\n' "$c"
		k "$c" get pods -A -o wide 2>&1 || true
	done
	case " $CREATED " in *" $HUB_CLUSTER "*)
		printf '\n--- hub: MemberClusters and the hub log\n'
		k "$HUB_CLUSTER" get memberclusters -o wide 2>&1 || true
		k "$HUB_CLUSTER" -n "$HUB_NAMESPACE" logs "deployment/${HUB_DEPLOYMENT}" --tail=40 2>&1 || true
		;;
	esac
	for c in $CREATED; do
		[[ "$c" != "$HUB_CLUSTER" ]] || continue
		printf '\n--- %s: member agent log\n' "$c"
		k "$c" -n "$AGENT_NAMESPACE" logs "deployment/${AGENT_DEPLOYMENT}" --tail=40 2>&1 || true
	done
}

on_exit() {
	local rc=$? c
	trap - EXIT
	((rc != 0)) || return 0
	diagnose >&2 || true
	if [[ "$NO_TEAR_DOWN" == 1 ]]; then
		warn "up.sh failed; NO_TEAR_DOWN=1 keeps the clusters: inspect them with KUBECONFIG=${KUBECONFIG_FILE}, delete them with kind/multi/down.sh"
	elif [[ -n "$CREATED" ]]; then
		warn "up.sh failed; deleting the clusters it created (rerun with NO_TEAR_DOWN=1 to keep them for inspection)"
		for c in $CREATED; do
			kind delete cluster --name "$(kind_name "$c")" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1 || true
		done
	fi
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# render FILE: a kind config with the hub's URL and ports filled in.
render() {
	sed -e "s|\${HUB_URL}|${HUB_URL:-}|g" \
		-e "s|\${HUB_NODE_PORT}|${HUB_NODE_PORT}|g" \
		-e "s|\${HUB_HOST_PORT}|${HUB_HOST_PORT}|g" "$1"
}

create_cluster() {
	local c=$1 cfg="${STATE_DIR}/kind/$1.yaml"
	mkdir -p "${STATE_DIR}/kind"
	render "${KIND_DIR}/${c}.kind.yaml" >"$cfg"
	if grep -q '[$][{]' "$cfg"; then
		die "${cfg} still has a \${...} placeholder: kind/multi/${c}.kind.yaml and render() in up.sh disagree"
	fi
	CREATED="${CREATED} ${c}"
	kind create cluster --name "$(kind_name "$c")" --image "$KIND_NODE_IMAGE" \
		--config "$cfg" --kubeconfig "$KUBECONFIG_FILE" --wait "${WAIT_TIMEOUT}s"
	# One kubeconfig per cluster too, for tools that take the current
	# context (member-agent ca --kubeconfig).
	kind get kubeconfig --name "$(kind_name "$c")" >"${STATE_DIR}/${c}.kubeconfig"
}

pod_cidrs_assigned() {
	local out
	out="$(nodes "$1")" && [[ -n "$out" ]] && awk 'NF != 3 { bad = 1 } END { exit bad }' <<<"$out"
}

# connect: on every node, a route to every other cluster's pod ranges (each
# node's podCIDR via that node) and Service range (via its first node, whose
# kube-proxy forwards to the endpoints).
connect() {
	local a b table_a table_b anode bnode bcidr bip svc first
	for a in $(all_clusters); do
		table_a="$(nodes "$a")"
		for b in $(all_clusters); do
			[[ "$a" != "$b" ]] || continue
			table_b="$(nodes "$b")"
			svc="$(kind_config_value "$b" serviceSubnet)"
			[[ -n "$svc" ]] || die "no serviceSubnet in kind/multi/${b}.kind.yaml"
			first="$(awk 'NR == 1 { print $3 }' <<<"$table_b")"
			while read -r anode _ _; do
				while read -r bnode bcidr bip; do
					docker exec "$anode" ip route replace "$bcidr" via "$bip" </dev/null
					info "${anode}: pods of ${bnode} ${bcidr} via ${bip}"
				done <<<"$table_b"
				docker exec "$anode" ip route replace "$svc" via "$first" </dev/null
				info "${anode}: Services of ${b} ${svc} via ${first}"
			done <<<"$table_a"
		done
	done
}

# make_hub_tls IP: a CA and the hub's serving certificate for IP (and
# localhost, for the host's port mapping).
make_hub_tls() {
	local ip=$1 d="${STATE_DIR}/hub-tls"
	mkdir -p "$d"
	cat >"${d}/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = anchorage kind hub
[v3_hub_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_hub_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:${ip}, DNS:$(kind_name "$HUB_CLUSTER")-control-plane, DNS:${HUB_SERVICE}.${HUB_NAMESPACE}.svc, DNS:localhost, IP:127.0.0.1
EOF
	(
		umask 077
		openssl ecparam -name prime256v1 -genkey -noout -out "${d}/ca.key"
		openssl ecparam -name prime256v1 -genkey -noout -out "${d}/tls.key"
	)
	openssl req -new -x509 -sha256 -days 365 -key "${d}/ca.key" -config "${d}/openssl.cnf" \
		-extensions v3_hub_ca -subj "/CN=anchorage kind hub CA" -out "${d}/ca.crt"
	openssl req -new -sha256 -key "${d}/tls.key" -config "${d}/openssl.cnf" -subj "/CN=${ip}" -out "${d}/tls.csr"
	openssl x509 -req -sha256 -days 365 -in "${d}/tls.csr" -CA "${d}/ca.crt" -CAkey "${d}/ca.key" \
		-CAcreateserial -CAserial "${d}/ca.srl" -extfile "${d}/openssl.cnf" -extensions v3_hub_server \
		-out "${d}/tls.crt" 2>/dev/null
	openssl verify -CAfile "${d}/ca.crt" "${d}/tls.crt" >/dev/null
}

# mcs_crd_dir: the mcs-api CRDs of the version in go.mod.
mcs_crd_dir() {
	local dir
	dir="$(cd "$REPO_ROOT" && go mod download sigs.k8s.io/mcs-api && go list -m -f '{{.Dir}}' sigs.k8s.io/mcs-api)"
	[[ -f "${dir}/config/crd/multicluster.x-k8s.io_serviceexports.yaml" ]] ||
		die "no ServiceExport CRD under ${dir}/config/crd (sigs.k8s.io/mcs-api from go.mod)"
	printf '%s/config/crd\n' "$dir"
}

# ---- main -------------------------------------------------------------------

step "checking prerequisites"
need_docker
need_kind
need_kubectl
need openssl "Install OpenSSL ('apt-get install openssl', 'brew install openssl'): up.sh makes the hub's serving certificate with it."
for c in $(all_clusters); do
	if cluster_exists "$c"; then
		die "kind cluster $(kind_name "$c") exists already: delete the old setup with kind/multi/down.sh (or choose another CLUSTER_PREFIX)"
	fi
done
for o in "$HUB_OVERLAY" "$MEMBER_OVERLAY"; do
	[[ -f "${REPO_ROOT}/deploy/${o}/kustomization.yaml" ]] || die "deploy/${o} is missing: kind/multi deploys the hub and the agents with the kind overlays"
done
info "kind $(kind version 2>/dev/null | awk '{ print $2 }'), node image ${KIND_NODE_IMAGE}"

step "copying deploy/ for each cluster and checking the manifests build (state in ${STATE_DIR})"
rm -rf "$STATE_DIR"
mkdir -p "$STATE_DIR"
hub_deploy="$(deploy_copy "$HUB_CLUSTER")"
hub_k="$(write_kustomization "$HUB_CLUSTER" "${hub_deploy}/${HUB_OVERLAY}" hub)"
kubectl kustomize "$hub_k" >/dev/null || die "the hub's manifests (deploy/${HUB_OVERLAY}) do not build; see above"
info "hub: deploy/${HUB_OVERLAY}"
for m in $MEMBERS; do
	member_deploy="$(deploy_copy "$m")"
	member_k="$(write_kustomization "$m" "${member_deploy}/${MEMBER_OVERLAY}" member-agent)"
	kubectl kustomize "$member_k" >"${STATE_DIR}/kustomize/${m}.yaml" ||
		die "the agent's manifests (deploy/${MEMBER_OVERLAY}) do not build; see above"
	info "${m}: deploy/${MEMBER_OVERLAY}"
done
mcs_dir=""
if ! grep -q 'name: serviceexports.multicluster.x-k8s.io' "${STATE_DIR}/kustomize/${m}.yaml"; then
	# The agent watches ServiceExports: without the CRD it cannot start.
	need go "Install Go (https://go.dev/dl/): up.sh takes the mcs-api ServiceExport CRD from the version in go.mod."
	mcs_dir="$(mcs_crd_dir)"
	info "mcs-api CRDs from ${mcs_dir}"
fi

step "images ${HUB_IMAGE}, ${AGENT_IMAGE}, ${DEMO_IMAGE}"
missing=""
for img in "$HUB_IMAGE" "$AGENT_IMAGE" "$DEMO_IMAGE"; do
	docker image inspect "$img" >/dev/null 2>&1 || missing="${missing} ${img}"
done
if [[ "$BUILD_IMAGES" == 1 || -n "$missing" ]]; then
	need make "Install make, or build the images yourself and tag them as above."
	info "make images IMAGE_REPO=${IMAGE_REPO} IMAGE_TAG=${IMAGE_TAG}${missing:+ (missing:${missing})}"
	make -C "$REPO_ROOT" images IMAGE_REPO="$IMAGE_REPO" IMAGE_TAG="$IMAGE_TAG" ||
		die "'make images' failed; build the images (or set IMAGE_REPO/IMAGE_TAG to ones you have) and rerun"
fi
for img in "$HUB_IMAGE" "$AGENT_IMAGE"; do
	docker image inspect "$img" >/dev/null 2>&1 || die "image ${img} is missing after 'make images'"
done

step "creating the hub cluster $(kind_name "$HUB_CLUSTER")"
create_cluster "$HUB_CLUSTER"
hub_ip="$(nodes "$HUB_CLUSTER" | awk 'NR == 1 { print $3 }')"
[[ -n "$hub_ip" ]] || die "no InternalIP on the hub's node"
HUB_URL="https://${hub_ip}:${HUB_NODE_PORT}"
printf '%s\n' "$HUB_URL" >"$HUB_URL_FILE"
info "hub URL ${HUB_URL} (the hub node's address on the kind network, the hub's node port)"

step "making the hub's serving certificate (its CA: ${HUB_CA_FILE})"
make_hub_tls "$hub_ip"

for m in $MEMBERS; do
	step "creating member cluster $(kind_name "$m") (service-account issuer $(issuer "$m"))"
	create_cluster "$m"
	got="$(k "$m" get --raw /.well-known/openid-configuration | sed -n 's/.*"issuer":"\([^"]*\)".*/\1/p')"
	[[ "$got" == "$(issuer "$m")" ]] ||
		die "${m}'s apiserver announces the issuer '${got}', not $(issuer "$m"): the kubeadmConfigPatches of kind/multi/${m}.kind.yaml did not apply (they need kind v${KIND_MIN_VERSION}+ and a 1.36+ node image)"
done

step "routing every cluster's pod and Service ranges between the nodes"
for c in $(all_clusters); do
	wait_until "the pod CIDRs of ${c}'s nodes" "$WAIT_TIMEOUT" pod_cidrs_assigned "$c"
done
connect

step "loading the images into the clusters"
kind load docker-image "$HUB_IMAGE" --name "$(kind_name "$HUB_CLUSTER")" | sed 's/^/    /'
for m in $MEMBERS; do
	kind load docker-image "$AGENT_IMAGE" --name "$(kind_name "$m")" | sed 's/^/    /'
	if docker image inspect "$DEMO_IMAGE" >/dev/null 2>&1; then
		kind load docker-image "$DEMO_IMAGE" --name "$(kind_name "$m")" | sed 's/^/    /'
	fi
done

step "CoreDNS of the members: a clusterset.local zone (demo.sh fills it from the ServiceExports)"
for m in $MEMBERS; do
	set_clusterset_dns "$m" ""
	info "${m}: done"
done

step "deploying the hub (deploy/${HUB_OVERLAY}) at ${HUB_URL}"
printf 'external-url=%s\n' "$HUB_URL" >"${hub_deploy}/${HUB_OVERLAY}/hub.env"
cp "${STATE_DIR}/hub-tls/tls.crt" "${STATE_DIR}/hub-tls/tls.key" "${hub_deploy}/${HUB_OVERLAY}/"
apply_k "$HUB_CLUSTER" -k "$hub_k"
k "$HUB_CLUSTER" wait --for=condition=Established --timeout="${WAIT_TIMEOUT}s" \
	crd/memberclusters.hub.anchorage.dev crd/trustdomains.hub.anchorage.dev >/dev/null
k "$HUB_CLUSTER" -n "$HUB_NAMESPACE" rollout status "deployment/${HUB_DEPLOYMENT}" --timeout="${WAIT_TIMEOUT}s"
if command -v curl >/dev/null 2>&1; then
	wait_until "the hub's /readyz from this machine" "$WAIT_TIMEOUT" \
		curl -sSf --cacert "$HUB_CA_FILE" --connect-to "${hub_ip}:${HUB_NODE_PORT}:127.0.0.1:${HUB_HOST_PORT}" "${HUB_URL}/readyz"
	info "${HUB_URL}/readyz answers (from this machine through 127.0.0.1:${HUB_HOST_PORT})"
fi

for m in $MEMBERS; do
	step "joining ${m}: its MemberCluster on the hub, the join token, the agent"
	peers=""
	for p in $MEMBERS; do
		[[ "$p" == "$m" ]] || peers="${peers:+${peers}, }$(trust_domain "$p")"
	done
	k "$HUB_CLUSTER" apply -f - <<EOF | sed 's/^/    /'
apiVersion: hub.anchorage.dev/v1alpha1
kind: MemberCluster
metadata:
  name: ${m}
spec:
  issuer: $(issuer "$m")
  trustDomain: $(trust_domain "$m")
  federatesWith: [${peers}]
  clusterSet: true
EOF
	wait_until "the hub's join token Secret ${HUB_NAMESPACE}/join-${m}" "$WAIT_TIMEOUT" \
		k "$HUB_CLUSTER" -n "$HUB_NAMESPACE" get secret "join-${m}"
	overlay="${STATE_DIR}/deploy-${m}/${MEMBER_OVERLAY}"
	(
		umask 077
		k "$HUB_CLUSTER" -n "$HUB_NAMESPACE" get secret "join-${m}" -o go-template='{{.data.token | base64decode}}' >"${overlay}/join-token"
	)
	[[ -s "${overlay}/join-token" ]] || die "Secret ${HUB_NAMESPACE}/join-${m} has no token"
	printf 'cluster-name=%s\ntrust-domain=%s\nhub-url=%s\n' "$m" "$(trust_domain "$m")" "$HUB_URL" >"${overlay}/member.env"
	cp "$HUB_CA_FILE" "${overlay}/hub-ca.crt"
	info "join token, hub CA and member.env written to ${overlay}"
	if [[ -n "$mcs_dir" ]]; then
		apply_k "$m" -f "${mcs_dir}/multicluster.x-k8s.io_serviceexports.yaml" -f "${mcs_dir}/multicluster.x-k8s.io_serviceimports.yaml"
		k "$m" wait --for=condition=Established --timeout="${WAIT_TIMEOUT}s" crd/serviceexports.multicluster.x-k8s.io >/dev/null
	fi
	apply_k "$m" -k "${STATE_DIR}/kustomize/${m}"
	k "$m" -n "$AGENT_NAMESPACE" rollout status "deployment/${AGENT_DEPLOYMENT}" --timeout="${WAIT_TIMEOUT}s"
done

step "waiting for the members to join and apply their federated bundles"
for m in $MEMBERS; do
	k "$HUB_CLUSTER" wait --for=condition=Joined --timeout="${WAIT_TIMEOUT}s" "memberclusters.hub.anchorage.dev/${m}" | sed 's/^/    /'
	k "$HUB_CLUSTER" wait --for=condition=Ready --timeout="${WAIT_TIMEOUT}s" "memberclusters.hub.anchorage.dev/${m}" | sed 's/^/    /'
done
k "$HUB_CLUSTER" get memberclusters | sed 's/^/    /'
for m in $MEMBERS; do
	info ""
	info "ClusterTrustBundles in ${m}:"
	k "$m" get clustertrustbundles | sed 's/^/    /'
done

step "ready"
cat <<EOF
    Hub URL:     ${HUB_URL}   (from this machine: --connect-to ${hub_ip}:${HUB_NODE_PORT}:127.0.0.1:${HUB_HOST_PORT}; CA ${HUB_CA_FILE})
    Issuers:     $(for m in $MEMBERS; do printf '%s ' "$(issuer "$m")"; done)
    Kubeconfig:  export KUBECONFIG=${KUBECONFIG_FILE}   (one per cluster: ${STATE_DIR}/<hub|east|west>.kubeconfig)
    Contexts:    $(for c in $(all_clusters); do printf 'kind-%s ' "$(kind_name "$c")"; done)
    Next:        kind/multi/demo.sh   (mTLS from east to west, the well-known URLs)
    Tear down:   kind/multi/down.sh
EOF
