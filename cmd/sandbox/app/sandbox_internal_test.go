package app

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// Only a 200 answer is printed as the document; anything else fails,
// naming the URL and the status.
func TestDocument(t *testing.T) {
	const url = "https://127.0.0.1:1/clusters/east/openid/v1/jwks"
	ok := &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"application/json"}}}
	if got, err := document(url, ok, []byte(`{"keys":[]}`+"\n")); err != nil || got != `{"keys":[]}` {
		t.Errorf("200: %q, %v", got, err)
	}
	notFound := &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Header: http.Header{"Content-Type": {"application/json"}}}
	got, err := document(url, notFound, []byte(`{"error":"no such member"}`))
	if err == nil || got != "" {
		t.Fatalf("404: printed %q, %v; want an error", got, err)
	}
	for _, want := range []string{url, "404 Not Found", "not 200 OK", "no such member"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// A run stopped by Ctrl-C reports the interruption, not the failure the
// cancellation caused; without a cancellation errors pass unchanged.
func TestInterrupted(t *testing.T) {
	failed := errors.New("the cross-cluster demo failed: waiting for east: context canceled")
	ctx, cancel := context.WithCancel(context.Background())
	if err := interrupted(ctx, failed); err != failed {
		t.Errorf("not cancelled: %v, want %v", err, failed)
	}
	if err := interrupted(ctx, nil); err != nil {
		t.Errorf("no error: %v", err)
	}
	cancel()
	err := interrupted(ctx, failed)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "failed") || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("cancelled: %v, want an interruption", err)
	}
	if err := interrupted(ctx, nil); err != nil {
		t.Errorf("cancelled, no error (--serve ended): %v", err)
	}
}
