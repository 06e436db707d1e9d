// Package e2e holds end-to-end tests: hubs and member agents, in-process,
// against real kube-apiservers, talking over real HTTPS on loopback.
package e2e
