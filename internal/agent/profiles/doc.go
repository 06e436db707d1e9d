// Package profiles holds what anchorage's two signers put in a
// certificate: anchorage.dev/spiffe (an X509-SVID for the pod's service
// account) and anchorage.dev/service-dns (the DNS names of the Services,
// and MCS clusterset names, that select the pod). The service-dns lookup
// goes through informer indexes so that its cost does not grow with the
// number of Services.
package profiles
