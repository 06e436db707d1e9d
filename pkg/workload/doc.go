// Package workload is what a workload needs to use the certificates
// anchorage issues to its pod: it loads the files the kubelet projects (a
// credential bundle, one SPIFFE trust bundle file per peer trust domain and
// the service-dns trust anchors), reloads them when the kubelet swaps its
// "..data" symlink or on a periodic tick, and builds tls.Configs that always
// use the current material.
//
// A Source implements go-spiffe's x509svid.Source and x509bundle.Source, so
// the spiffetls/tlsconfig package works with it directly:
//
//	src, err := workload.New(ctx, workload.Options{
//		CredentialBundleFile: "/var/run/anchorage/credential-bundle.pem",
//		TrustBundleFiles: map[spiffeid.TrustDomain]string{
//			east: "/var/run/anchorage/east.anchorage.test.spiffe-trust-bundle.pem",
//		},
//	})
//	cfg := src.ServerConfig(tlsconfig.AuthorizeMemberOf(east))
//
// Trust bundles follow the SPIFFE filesystem-delivery draft: one file per
// trust domain, never merged, and a peer's certificate is verified only
// against the bundle of its own trust domain. Service-dns anchors carry no
// trust domain but a scope, and peers are verified by DNS name
// (DNSClientConfig, DNSServerConfig) against the anchors of the name's
// scope only: a name under svc.clusterset.local against the clusterset's
// (Options.ClustersetDNSTrustBundleFiles), any other name against this
// cluster's own (Options.LocalDNSTrustBundleFiles). Every member's CA may
// sign "svc" names, so the clusterset's anchors never verify a name of this
// cluster.
//
// Certificates and roots are read at each handshake, so a reload never drops
// an established connection and the next handshake uses the new material. A
// reload that fails (a half-written or invalid file) keeps the last good
// material and reports the error through Options.OnError and Options.Logger.
//
// This package never imports the agent or anything under internal/.
package workload
