package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The first signal cancels; later ones only report that stopping goes on,
// and nothing exits the process.
func TestRelaySignals(t *testing.T) {
	sigs := make(chan os.Signal)
	done := make(chan struct{})
	var (
		mu          sync.Mutex
		first, more int
	)
	var wg sync.WaitGroup
	wg.Go(func() {
		relaySignals(sigs, done, func() { mu.Lock(); first++; mu.Unlock() }, func() { mu.Lock(); more++; mu.Unlock() })
	})
	for _, s := range []os.Signal{os.Interrupt, os.Interrupt, syscall.SIGTERM} {
		select {
		case sigs <- s:
		case <-time.After(10 * time.Second):
			t.Fatal("relaySignals stopped receiving signals")
		}
	}
	close(done)
	wg.Wait()
	if first != 1 || more != 2 {
		t.Errorf("first called %d times, more %d; want 1 and 2", first, more)
	}
}

func TestOutcome(t *testing.T) {
	canceled := fmt.Errorf("interrupted: %w", context.Canceled)
	for _, tc := range []struct {
		err      error
		signaled bool
		msg      string
		code     int
	}{
		{nil, false, "", 0},
		{nil, true, "", 0},
		{canceled, true, "interrupted", 130},
		{canceled, false, canceled.Error(), 1},
		{errors.New("the demo failed"), true, "the demo failed", 1},
	} {
		if msg, code := outcome(tc.err, tc.signaled); msg != tc.msg || code != tc.code {
			t.Errorf("outcome(%v, %v) = %q, %d; want %q, %d", tc.err, tc.signaled, msg, code, tc.msg, tc.code)
		}
	}
}
