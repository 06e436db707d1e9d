// Package crds embeds the CRDs of the hub's API (hub.anchorage.dev), for tests
// and the sandbox to install. hack/generate.sh writes the YAML here and the
// same files to deploy/hub/crds, the kustomize base; hack/verify-generate.sh
// checks that both copies are current.
package crds

import (
	"embed"
	"io/fs"
)

var (
	// MemberCluster is the CRD of memberclusters.hub.anchorage.dev (YAML).
	//
	//go:embed hub.anchorage.dev_memberclusters.yaml
	MemberCluster []byte

	// TrustDomain is the CRD of trustdomains.hub.anchorage.dev (YAML).
	//
	//go:embed hub.anchorage.dev_trustdomains.yaml
	TrustDomain []byte
)

//go:embed *.yaml
var files embed.FS

// All returns every CRD of the hub's API, one YAML document per entry in file
// name order, in the form localcluster.Options.CRDs takes. The slices are the
// caller's.
func All() [][]byte {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		panic(err) // the pattern is well-formed
	}
	out := make([][]byte, 0, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			panic(err) // embedded at build time
		}
		out = append(out, b)
	}
	return out
}
