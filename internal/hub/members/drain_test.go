package members

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// When the server shuts down, a waiting long poll answers 204 at once, as
// the hub wires it (RegisterOnShutdown), instead of waiting out its
// timeout until the connection is cut; a later poll does not wait either.
func TestLongPollsAnswerOnShutdown(t *testing.T) {
	s := &BundleSets{published: map[string]*published{}, waiters: map[string]chan struct{}{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body := s.Next(r.Context(), "east", 0, time.Minute); body != nil {
			_, _ = w.Write(body)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	srv.Config.RegisterOnShutdown(s.Drain)

	answered := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Error(err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	for deadline := time.Now().Add(30 * time.Second); !s.hasWaiter("east"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the long poll never started waiting")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Config.Shutdown(ctx) }()
	select {
	case code := <-answered:
		if code != http.StatusNoContent {
			t.Errorf("status %d, want 204", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting poll was not answered after shutdown started")
	}
	if err := <-shutdown; err != nil {
		t.Errorf("shutdown: %v (after %s)", err, time.Since(start))
	}
	if body := s.Next(context.Background(), "east", 0, time.Minute); body != nil {
		t.Errorf("a poll while draining got %s", body)
	}
}

// hasWaiter: a long poll of member is waiting.
func (s *BundleSets) hasWaiter(member string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.waiters[member]
	return ok
}
