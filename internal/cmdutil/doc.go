// Package cmdutil is what anchorage's binaries share around their app
// packages: flag and log setup in main, the Kubernetes client config, and a
// manager runnable that runs on every replica.
package cmdutil
