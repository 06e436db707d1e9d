#!/usr/bin/env bash
# Builds kube-apiserver and etcd from source through the Go module proxy, once,
# and prints the folder to use as KUBEBUILDER_ASSETS.
#
# envtest's downloader needs hosts this project cannot reach; the module proxy
# is always there. The binaries are cached under
#   ${ANCHORAGE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/anchorage/envtest}/k8s-<version>-go<go version>
# so later runs print the folder at once. Progress goes to stderr; stdout is only
# the folder.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.1}"
STAGING_VERSION="v0${K8S_VERSION#v1}"   # v1.37.1 -> v0.37.1
GO_VERSION="$(go env GOVERSION)"
CACHE_ROOT="${ANCHORAGE_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/anchorage/envtest}"
OUT="${CACHE_ROOT}/k8s-${K8S_VERSION}-${GO_VERSION}"

log() { printf 'envtest-assets: %s\n' "$*" >&2; }
complete() { [[ -x "${OUT}/kube-apiserver" && -x "${OUT}/etcd" ]]; }

if complete; then
  echo "${OUT}"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH; install Go 1.26 first"; exit 1; }

# Test packages run in parallel and may all arrive here on a first run: one
# builds, the others wait for it and reuse its folder (two builds would
# replace each other's binaries under running tests). The lock goes when
# this script exits.
mkdir -p "${CACHE_ROOT}"
exec 9>"${CACHE_ROOT}/.build.lock"
if ! flock -n 9; then
  log "waiting for another build to finish (lock ${CACHE_ROOT}/.build.lock)"
  flock 9
fi
if complete; then
  echo "${OUT}"
  exit 0
fi

WORK="$(mktemp -d)"
# Built next to OUT, so that the final mv is a rename: OUT is either absent
# or complete.
BUILD="$(mktemp -d "${OUT}.build.XXXXXX")"
chmod 755 "${BUILD}"
trap 'rm -rf "${WORK}" "${BUILD}"' EXIT

log "building kube-apiserver and etcd ${K8S_VERSION} from the Go module proxy (first time only, about 5 minutes on 2 cores)"
cd "${WORK}"
cat > go.mod <<MOD
module anchorage.dev/envtest-assets

go 1.26

require k8s.io/kubernetes ${K8S_VERSION}
MOD

log "[1/4] downloading k8s.io/kubernetes ${K8S_VERSION}"
GOFLAGS=-mod=mod go mod download k8s.io/kubernetes@"${K8S_VERSION}"
KMOD="$(go mod download -json k8s.io/kubernetes@"${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "${KMOD}" ]] || { log "could not find kubernetes' go.mod in the module cache"; exit 1; }

# Every staging module that kubernetes replaces with ./staging/... is published
# at v0.<minor>.<patch>; point the throw-away module at those versions.
log "[2/4] pinning the staging modules to ${STAGING_VERSION}"
grep -Eo 'k8s\.io/[A-Za-z0-9._/-]+ => \./staging/' "${KMOD}" | awk '{print $1}' | sort -u | while read -r m; do
  printf 'replace %s => %s %s\n' "$m" "$m" "${STAGING_VERSION}" >> go.mod
done

cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
GO

log "[3/4] resolving dependencies"
GOFLAGS=-mod=mod go mod tidy >&2 2>&1 || GOFLAGS=-mod=mod go get k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3 >&2

log "[4/4] compiling (kube-apiserver, then etcd)"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "${BUILD}/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
log "      kube-apiserver done"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "${BUILD}/etcd" go.etcd.io/etcd/server/v3
log "      etcd done"
rm -rf "${OUT}" # an incomplete one, left by hand: no build of ours leaves one
mv "${BUILD}" "${OUT}"
log "cached in ${OUT}"
echo "${OUT}"
