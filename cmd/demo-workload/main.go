// Command demo-workload is anchorage's example workload: a server and a
// client that talk over SPIFFE mTLS and over TLS verified by the server's
// clusterset DNS name, with the pod certificates and trust bundles the
// kubelet projects. deploy/demo runs it in two member clusters.
package main

import (
	"context"

	"github.com/anchorage-dev/anchorage/cmd/demo-workload/app"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
)

func main() {
	opts := app.NewOptions()
	cmdutil.Main("demo-workload", opts, func(ctx context.Context) error { return app.Main(ctx, opts) })
}
