// Command hub runs the anchorage hub: member registration, agent
// authentication, the members' well-known documents and trust bundles.
package main

import (
	"context"

	"github.com/anchorage-dev/anchorage/cmd/hub/app"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
)

func main() {
	opts := app.NewOptions()
	cmdutil.Main("hub", opts, func(ctx context.Context) error { return app.Main(ctx, opts) })
}
