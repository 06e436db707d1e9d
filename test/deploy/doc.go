// Package deploy tests the kustomizations under deploy/ as users apply
// them: rendered by kustomize's own library (bases and overlays, the kind
// overlays also with the inputs a script writes), applied server-side to a
// real kube-apiserver, pods admitted under the restricted Pod Security
// Standard, and every container's arguments parsed and validated by the
// flags of the binary it runs.
package deploy
