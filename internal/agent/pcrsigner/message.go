package pcrsigner

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxMessage bounds condition messages and Event notes. The apiserver
// rejects an Event note over 1 KiB (events.k8s.io/v1) and a condition
// message over 32 KiB: a Denied or Failed status it rejects would be
// retried until the request is garbage-collected, never written.
const MaxMessage = 1024

// maxQuoted bounds one piece of user input quoted in a message; %q may
// still make it up to four times longer.
const maxQuoted = 100

// Shorten cuts s to at most limit bytes, on a rune boundary, saying how
// much was left out.
func Shorten(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := cutAt(s, limit-len(fmt.Sprintf("… (%d more bytes)", len(s))))
	return fmt.Sprintf("%s… (%d more bytes)", s[:cut], len(s)-cut)
}

// Quote quotes user input for a message, cut to a readable length.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := cutAt(s, maxQuoted)
	return fmt.Sprintf("%q… (%d more bytes)", s[:cut], len(s)-cut)
}

// FirstFew joins the first n items and says how many more there are.
func FirstFew(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// cutAt is the largest rune boundary of s at or below n.
func cutAt(s string, n int) int {
	n = max(min(n, len(s)), 0)
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}
