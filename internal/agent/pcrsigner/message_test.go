package pcrsigner

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestShorten(t *testing.T) {
	if got := Shorten("short", 10); got != "short" {
		t.Errorf("Shorten kept %q", got)
	}
	long := strings.Repeat("é", 1000) // two bytes a rune: cuts must not split one
	got := Shorten(long, MaxMessage)
	if len(got) > MaxMessage || !utf8.ValidString(got) || !strings.HasSuffix(got, " more bytes)") {
		t.Errorf("Shorten: %d bytes, valid UTF-8 %v, %q", len(got), utf8.ValidString(got), got[len(got)-30:])
	}
	if got := Quote(strings.Repeat("x", 5000)); got != `"`+strings.Repeat("x", 100)+`"… (4900 more bytes)` {
		t.Errorf("Quote = %q", got)
	}
	if got := FirstFew([]string{"a", "b", "c", "d", "e"}, 3); got != "a, b, c and 2 more" {
		t.Errorf("FirstFew = %q", got)
	}
	if got := FirstFew([]string{"a", "b"}, 3); got != "a, b" {
		t.Errorf("FirstFew = %q", got)
	}
}
