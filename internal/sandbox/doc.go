// Package sandbox runs anchorage on one machine: a hub cluster and member
// clusters on real kube-apiservers (internal/localcluster), the hub and the
// member agents in this process with their real code paths, members joined
// the way an operator joins them. RunDemo adds workloads (internal/kubeletsim
// pods using pkg/workload) that talk across two members. The sandbox command
// and the end-to-end tests are built on it.
package sandbox
