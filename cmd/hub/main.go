// Command hub runs the anchorage hub: member registration, agent
// authentication, the members' well-known documents and trust bundles.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/anchorage-dev/anchorage/cmd/hub/app"
)

func main() {
	opts := app.NewOptions()
	fs := pflag.NewFlagSet("hub", pflag.ExitOnError)
	opts.AddFlags(fs)
	zapOpts := zap.Options{}
	logFlags := flag.NewFlagSet("log", flag.ContinueOnError)
	zapOpts.BindFlags(logFlags)
	fs.AddGoFlagSet(logFlags)
	_ = fs.Parse(os.Args[1:])
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := app.Main(ctrl.SetupSignalHandler(), opts); err != nil {
		fmt.Fprintln(os.Stderr, "hub:", err)
		os.Exit(1)
	}
}
