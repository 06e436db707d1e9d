// Package app is the sandbox command: a hub and two member clusters (east,
// west) on real kube-apiservers on this machine, all components in this
// process, a client pod in east and a server pod in west talking over
// cross-cluster mTLS through a CA rotation, and a walk through what the hub
// serves.
package app
