package hubclient

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// A join token Secret made from a file ends in a newline; the hub compares
// tokens byte for byte.
func TestJoinTokenIsTrimmed(t *testing.T) {
	for raw, want := range map[string]string{
		"s3cret":          "s3cret",
		"s3cret\n":        "s3cret",
		"  s3cret \r\n\t": "s3cret",
		"\n":              "",
		"":                "",
	} {
		secret := &corev1.Secret{Data: map[string][]byte{JoinTokenKey: []byte(raw)}}
		if got := joinToken(secret); got != want {
			t.Errorf("joinToken(%q) = %q, want %q", raw, got, want)
		}
	}
	if got := joinToken(&corev1.Secret{}); got != "" {
		t.Errorf("joinToken of a Secret without data = %q, want empty", got)
	}
}
