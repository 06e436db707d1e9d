//go:build tools

// Package tools pins the code generators of anchorage. It is a separate module
// so that the main module's go.mod never depends on them; run a generator with
//
//	go run -modfile=hack/tools/go.mod sigs.k8s.io/controller-tools/cmd/controller-gen ...
//
// or see hack/generate.sh.
package tools

import (
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
