// Package app wires demo-workload, anchorage's example workload (flags in
// Options). It reads the files the kubelet projects into one folder — the
// pod's SPIFFE credential bundle, one trust bundle file per peer trust
// domain, the service-dns credential and the clusterset's service-dns
// anchors — through pkg/workload, which reloads them when the kubelet
// rotates them.
//
// In server mode it answers HTTPS requests on two listeners: SPIFFE mTLS,
// admitting only the SPIFFE IDs or trust domains it is told to, and TLS
// with its service-dns certificate (<svc>.<ns>.svc.clusterset.local),
// without client certificates. In client mode it calls them every
// --interval, each call a new connection and a full handshake, and logs the
// identity it verified. Both log every exchange and every refused peer, so
// `kubectl logs` shows cross-cluster mTLS at work.
package app
