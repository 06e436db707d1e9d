// Package app wires the hub: flags (Options), the controller manager on the
// hub cluster, the member status and documents controllers, and the HTTPS
// server (chi) for the well-known documents, the agent API, health probes
// and metrics.
package app
