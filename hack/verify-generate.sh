#!/usr/bin/env bash
# Fails, showing the difference, when the files hack/generate.sh writes are
# stale: it regenerates them into a temporary folder and compares.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

api=pkg/apis/hub/v1alpha1
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
hack/generate.sh "$tmp"

status=0
check() { # check <diff args...>: run diff, remember a failure
	if ! diff -u "$@"; then
		status=1
	fi
}
check "$tmp/$api/zz_generated.deepcopy.go" "$api/zz_generated.deepcopy.go"
# Hand-written Go files (embed.go, tests) live next to the embedded CRDs.
check -r -x '*.go' "$tmp/$api/crds" "$api/crds"
check -r "$tmp/deploy/hub/crds" deploy/hub/crds

# The embedded copy and the kustomize copy must be the same files.
for f in "$api"/crds/*.yaml deploy/hub/crds/hub.anchorage.dev_*.yaml; do
	[[ -e "$f" ]] || continue
	name="$(basename "$f")"
	if ! cmp -s "$api/crds/$name" "deploy/hub/crds/$name"; then
		echo "$api/crds/$name and deploy/hub/crds/$name differ" >&2
		status=1
	fi
done

if [[ $status -ne 0 ]]; then
	echo >&2
	echo "verify-generate: generated files are stale: run \`make generate\` (hack/generate.sh) and commit the result." >&2
	exit 1
fi
echo "verify-generate: generated files are up to date." >&2
