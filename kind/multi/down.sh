#!/usr/bin/env bash
# kind/multi/down.sh: deletes the clusters of kind/multi/up.sh and its state
# (kind/multi/.state). With NO_TEAR_DOWN=1 it keeps everything and says so.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "$NO_TEAR_DOWN" == 1 ]]; then
	step "NO_TEAR_DOWN=1: keeping the clusters and ${STATE_DIR}"
	exit 0
fi

step "checking prerequisites"
need_docker
need kind "Install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) to delete the clusters, or remove their containers with 'docker rm -f'."

# kind also removes the cluster's context from the kubeconfig it wrote.
kubeconfig_args=()
if [[ -f "$KUBECONFIG_FILE" ]]; then
	kubeconfig_args=(--kubeconfig "$KUBECONFIG_FILE")
fi
for c in $(all_clusters); do
	if cluster_exists "$c"; then
		step "deleting kind cluster $(kind_name "$c")"
		kind delete cluster --name "$(kind_name "$c")" ${kubeconfig_args[@]+"${kubeconfig_args[@]}"}
	else
		info "kind cluster $(kind_name "$c") does not exist"
	fi
done

step "removing ${STATE_DIR}"
rm -rf "$STATE_DIR"
step "done"
