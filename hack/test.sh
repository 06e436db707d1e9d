#!/usr/bin/env bash
# The test command of the README and CI: builds (once) the kube-apiserver and
# etcd the integration tests run against, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)"
export KUBEBUILDER_ASSETS
echo "test: kube-apiserver and etcd from ${KUBEBUILDER_ASSETS}" >&2

# Packages run two at a time (the machine has 2 cores); each integration
# package starts its own apiservers on free loopback ports.
go test -count=1 -p 2 -timeout 30m "$@" ./...
