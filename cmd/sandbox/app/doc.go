// Package app is the sandbox command: a hub and two member clusters (east,
// west) on real kube-apiservers on this machine, all components in this
// process, and a walk through what they serve.
package app
