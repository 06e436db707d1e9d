// Package bench holds anchorage's benchmark commands. It is its own module so
// that the main module never depends on k8s.io/kubernetes (needed here for
// Kubernetes' hermetic test signer, the issuance benchmark's comparison).
// Each command prints its figures as a Markdown table; docs/benchmarks.md
// quotes them.
package bench
