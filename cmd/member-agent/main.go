// Command member-agent runs anchorage in a member cluster: the
// anchorage.dev/spiffe and anchorage.dev/service-dns signers and the
// cluster's ClusterTrustBundles. `member-agent ca <action>` drives the
// rotation of its CA pools.
package main

import (
	"context"
	"os"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ca" {
		action, args := "status", os.Args[2:]
		if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
			action, args = args[0], args[1:]
		}
		opts := app.NewCAOptions(action)
		cmdutil.Main("member-agent ca", opts, func(ctx context.Context) error { return app.CAMain(ctx, opts, os.Stdout) }, cmdutil.Args(args))
		return
	}
	opts := app.NewOptions()
	cmdutil.Main("member-agent", opts, func(ctx context.Context) error { return app.Main(ctx, opts) })
}
