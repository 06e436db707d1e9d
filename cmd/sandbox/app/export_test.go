package app

import (
	"context"
	"io"

	"github.com/anchorage-dev/anchorage/internal/sandbox"
)

// RunWithResult is Run returning what the demo saw.
func RunWithResult(ctx context.Context, opts *Options, out io.Writer) (*sandbox.DemoResult, error) {
	return run(ctx, opts, out)
}
