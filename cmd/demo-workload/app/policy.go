package app

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// peerPolicy authorizes a verified peer by SPIFFE ID or trust domain. The
// flag names go into its errors, so a refusal says what to change.
type peerPolicy struct {
	idFlag, tdFlag string
	ids            []spiffeid.ID
	tds            []spiffeid.TrustDomain
}

func newPeerPolicy(idFlag string, ids []string, tdFlag string, tds []string) (*peerPolicy, error) {
	p := &peerPolicy{idFlag: idFlag, tdFlag: tdFlag}
	var errs []error
	for _, s := range ids {
		id, err := spiffeid.FromString(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not a SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>): %w", idFlag, s, err))
			continue
		}
		p.ids = append(p.ids, id)
	}
	for _, s := range tds {
		td, err := spiffeid.TrustDomainFromString(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not a trust domain name: %w", tdFlag, s, err))
			continue
		}
		p.tds = append(p.tds, td)
	}
	if len(ids) == 0 && len(tds) == 0 {
		errs = append(errs, fmt.Errorf("set %s or %s: the peer's identity is what SPIFFE mTLS checks", idFlag, tdFlag))
	}
	return p, errors.Join(errs...)
}

// authorize is a go-spiffe tlsconfig.Authorizer.
func (p *peerPolicy) authorize(id spiffeid.ID, _ [][]*x509.Certificate) error {
	if slices.Contains(p.ids, id) || slices.Contains(p.tds, id.TrustDomain()) {
		return nil
	}
	return fmt.Errorf("peer %s is not allowed: it is not in %s %s nor in %s %s", id, p.idFlag, joinStrings(p.ids), p.tdFlag, joinStrings(p.tds))
}

// trustDomains are the trust domains whose bundles verify peers: those of
// the IDs and the trust domains named, each once.
func (p *peerPolicy) trustDomains() []spiffeid.TrustDomain {
	var out []spiffeid.TrustDomain
	add := func(td spiffeid.TrustDomain) {
		if !slices.Contains(out, td) {
			out = append(out, td)
		}
	}
	for _, id := range p.ids {
		add(id.TrustDomain())
	}
	for _, td := range p.tds {
		add(td)
	}
	return out
}

func joinStrings[T fmt.Stringer](xs []T) string {
	if len(xs) == 0 {
		return "(none)"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}
