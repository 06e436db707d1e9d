package benchutil

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// A SIGINT cancels the context instead of killing the process, so the
// benchmark's deferred stops get to run.
func TestInterruptibleCancelsOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			// Keeps the process alive should the helper stop catching sig.
			guard := make(chan os.Signal, 1)
			signal.Notify(guard, sig)
			defer signal.Stop(guard)

			ctx, stop := Interruptible(context.Background())
			defer stop()
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("context not cancelled 5s after %v", sig)
			}
		})
	}
}
