// Command member-agent runs anchorage in a member cluster: the
// anchorage.dev/spiffe and anchorage.dev/service-dns signers and the
// cluster's ClusterTrustBundles.
package main

import (
	"context"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
)

func main() {
	opts := app.NewOptions()
	cmdutil.Main("member-agent", opts, func(ctx context.Context) error { return app.Main(ctx, opts) })
}
