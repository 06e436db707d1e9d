package oidcbundle

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Options configure a Store.
type Options struct {
	// HubURL is the hub's external URL, e.g. https://hub.example. Member
	// issuers are <HubURL>/clusters/<name>, and agent tokens must carry it
	// as their audience.
	HubURL string
	// Clock checks token expiry; nil means the real clock.
	Clock signers.Clock
}

// Store holds the documents of every member and trust domain, built once
// per change, and serves them. Readers load an immutable snapshot through
// an atomic pointer and never wait; writers build the new documents first,
// then copy the snapshot's maps and swap the pointer (copy on write), so a
// reader sees a member either entirely before or entirely after a change.
type Store struct {
	hubURL string
	clock  signers.Clock

	// mu serialises writers so that two concurrent updates cannot each
	// copy the same snapshot and lose the other's change.
	mu   sync.Mutex
	snap atomic.Pointer[snapshot]
}

type snapshot struct {
	members      map[string]*memberDocs
	trustDomains map[string]*document
}

// NewStore returns an empty store.
func NewStore(opts Options) (*Store, error) {
	hubURL, err := checkHubURL(opts.HubURL)
	if err != nil {
		return nil, err
	}
	s := &Store{hubURL: hubURL, clock: opts.Clock}
	s.snap.Store(&snapshot{members: map[string]*memberDocs{}, trustDomains: map[string]*document{}})
	return s, nil
}

// checkHubURL accepts an absolute https URL (http only on loopback, for
// tests and the sandbox) without query, fragment or user info: it becomes
// the prefix of every issuer, and OIDC issuers may carry none of those.
func checkHubURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("hub URL %q: %w", raw, err)
	}
	loopback := u.Hostname() == "localhost"
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	switch {
	case u.Host == "":
		return "", fmt.Errorf("hub URL %q: want an absolute URL such as https://hub.example", raw)
	case u.Scheme != "https" && !(u.Scheme == "http" && loopback):
		return "", fmt.Errorf("hub URL %q: OIDC issuers must be https (http is accepted on loopback only)", raw)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "", fmt.Errorf("hub URL %q: must not have a query, fragment or user info", raw)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// HubURL is the normalised hub URL (no trailing slash).
func (s *Store) HubURL() string { return s.hubURL }

// Issuer is the issuer URL of the member named cluster.
func (s *Store) Issuer(cluster string) string { return s.hubURL + "/clusters/" + cluster }

// SetMember validates m, builds its documents and publishes them. On error
// the member's previous documents stay served (fail-static).
func (s *Store) SetMember(m Member) error {
	return s.SetMembers([]Member{m})[m.Name]
}

// SetMembers is SetMember for many members, published together: one copy
// of the member table, not one per member.
func (s *Store) SetMembers(ms []Member) map[string]error {
	errs := map[string]error{}
	built := make([]*memberDocs, 0, len(ms))
	for _, m := range ms {
		docs, err := buildMember(s.hubURL, m, s.clock)
		if err != nil {
			errs[m.Name] = err
			continue
		}
		built = append(built, docs)
	}
	if len(built) > 0 {
		s.update(func(next *snapshot) {
			next.members = maps.Clone(next.members)
			for _, docs := range built {
				next.members[docs.name] = docs
			}
		})
	}
	return errs
}

// DeleteMember stops serving the member's documents and accepting its tokens.
func (s *Store) DeleteMember(name string) {
	s.update(func(next *snapshot) {
		if _, ok := next.members[name]; ok {
			next.members = maps.Clone(next.members)
			delete(next.members, name)
		}
	})
}

// SetTrustDomain publishes the bundle of a whole trust domain at
// <hub URL>/trust-domains/<td>/bundle. On error the previous bundle stays
// served.
func (s *Store) SetTrustDomain(b TrustDomainBundle) error {
	td, doc, err := buildTrustDomain(b)
	if err != nil {
		return err
	}
	s.update(func(next *snapshot) {
		next.trustDomains = maps.Clone(next.trustDomains)
		next.trustDomains[td] = doc
	})
	return nil
}

// DeleteTrustDomain stops serving the trust domain's bundle.
func (s *Store) DeleteTrustDomain(td string) {
	s.update(func(next *snapshot) {
		if _, ok := next.trustDomains[td]; ok {
			next.trustDomains = maps.Clone(next.trustDomains)
			delete(next.trustDomains, td)
		}
	})
}

// update applies change to a shallow copy of the current snapshot; change
// clones any map it modifies, since readers may be using the old ones.
func (s *Store) update(change func(next *snapshot)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := *s.snap.Load()
	change(&next)
	s.snap.Store(&next)
}

// VerifyAgentToken verifies the service-account token an agent presented
// on a call for cluster (see Verifier.Verify).
//
// The member is taken from the request path, never from the token: the
// token's iss is unverified input until its signature is checked, and
// choosing the key set by it would let any registered member's token
// select which member it is checked for. With the path naming the member
// whose record the call writes, the token must verify against exactly that
// member's issuer and keys, so an agent can only ever act for its own
// cluster, and there is nothing to look up before verification.
func (s *Store) VerifyAgentToken(ctx context.Context, cluster, rawToken string) (*AgentClaims, error) {
	m := s.snap.Load().members[cluster]
	if m == nil {
		return nil, fmt.Errorf("%w: %q is not a member of this hub", ErrUnknownCluster, cluster)
	}
	c, err := m.verifier.Verify(ctx, rawToken)
	if err != nil {
		return nil, fmt.Errorf("agent token for cluster %q: %w", cluster, err)
	}
	return c, nil
}
