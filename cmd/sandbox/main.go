// Command sandbox runs a hub and two member clusters on real kube-apiservers
// on this machine, all components in one process, and shows what they do.
package main

import (
	"context"
	"os"

	"github.com/anchorage-dev/anchorage/cmd/sandbox/app"
	"github.com/anchorage-dev/anchorage/internal/cmdutil"
)

func main() {
	opts := app.NewOptions()
	cmdutil.Main("sandbox", opts, func(ctx context.Context) error { return app.Run(ctx, opts, os.Stdout) },
		cmdutil.LogTo(opts.LogFile), cmdutil.Interruptible(app.Interrupt(os.Stdout)))
}
