package app

import (
	"strings"
	"testing"
	"time"
)

// Validate refuses what the hub cannot serve, and says why.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*Options)
		wantErr string // "" = valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"root slash", func(o *Options) { o.ExternalURL = "https://hub.example.com/" }, ""},
		{"with port", func(o *Options) { o.ExternalURL = "https://hub.example.com:8443" }, ""},
		{"path", func(o *Options) { o.ExternalURL = "https://hub.example.com/anchorage" },
			`--external-url "https://hub.example.com/anchorage" has a path: serve the hub at the root of its host (a proxy may strip a prefix, but then give the URL the hub is reached at without it, e.g. https://hub.example.com)`},
		{"query", func(o *Options) { o.ExternalURL = "https://hub.example.com?a=b" }, "without query, fragment or user info"},
		{"empty query", func(o *Options) { o.ExternalURL = "https://hub.example.com/?" }, "without query, fragment or user info"},
		{"fragment", func(o *Options) { o.ExternalURL = "https://hub.example.com/#x" }, "without query, fragment or user info"},
		{"http", func(o *Options) { o.ExternalURL = "http://hub.example.com" }, "must be an https URL"},
		{"longest long poll", func(o *Options) { o.LongPollTimeout = 75 * time.Second }, ""},
		{"long poll the agent gives up on", func(o *Options) { o.LongPollTimeout = 90 * time.Second },
			"--long-poll-timeout 1m30s is above 1m15s: agents give up on a poll after 90s, so a longer one fails every quiet poll and fires the hub-unreachable alert"},
		{"long poll just above", func(o *Options) { o.LongPollTimeout = 76 * time.Second }, "--long-poll-timeout 1m16s is above 1m15s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			o.ExternalURL = "https://hub.example.com"
			tc.change(o)
			err := o.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
