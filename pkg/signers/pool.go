package signers

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// CAState is where a CA is in its rotation.
type CAState string

const (
	// StateNext: published as an anchor, not signing yet.
	StateNext CAState = "next"
	// StateActive: signing. A pool has exactly one.
	StateActive CAState = "active"
	// StateRetired: no longer signing, published until its last leaf expires.
	StateRetired CAState = "retired"
)

// Pool is the set of CAs of one signer in one cluster.
type Pool struct {
	Signer string
	CAs    []*CA
}

// Active returns the signing CA.
func (p *Pool) Active() (*CA, error) {
	var active *CA
	for _, ca := range p.CAs {
		if ca.State == StateActive {
			if active != nil {
				return nil, fmt.Errorf("the %s CA pool has more than one active CA", p.Signer)
			}
			active = ca
		}
	}
	if active == nil {
		return nil, fmt.Errorf("the %s CA pool has no active CA", p.Signer)
	}
	return active, nil
}

// Anchors returns the trust anchors to publish at now: the anchors of the
// active and next CAs, and of retired CAs whose leaves may still be valid.
// Active first, then next, then retired; duplicates dropped (the
// ClusterTrustBundle API rejects them).
func (p *Pool) Anchors(now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	seen := map[string]bool{}
	for _, state := range []CAState{StateActive, StateNext, StateRetired} {
		for _, ca := range p.CAs {
			if ca.State != state || ca.leavesExpired(now) {
				continue
			}
			a := ca.Anchor()
			if !seen[string(a.Raw)] {
				seen[string(a.Raw)] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// leavesExpired: ca is retired and every leaf it signed has expired at
// now. A retired CA without a retirement time (written by hand) is kept
// until Stamped gives it one: its leaves may be valid for another day.
func (c *CA) leavesExpired(now time.Time) bool {
	return c.State == StateRetired && !c.RetiredAt.IsZero() && !now.Before(c.RetiredAt.Add(MaxLeafLifetime))
}

// Validate checks the pool is usable for signing: exactly one active CA.
// A pool with several next CAs (written by hand) still loads and signs;
// Promoted refuses it.
func (p *Pool) Validate() error {
	for i, ca := range p.CAs {
		if err := ca.validate(); err != nil {
			return fmt.Errorf("CA %d of the %s pool: %w", i, p.Signer, err)
		}
	}
	_, err := p.Active()
	return err
}

// Stamped returns a copy of the pool where a next CA without AddedAt and
// retired CAs without RetiredAt (put there by hand) are timed from now:
// the next CA waits its full publication, a retired one stays published
// while its leaves may live. It also returns the SKIDs of the CAs stamped.
func (p *Pool) Stamped(now time.Time) (*Pool, []string) {
	out := p.clone()
	var stamped []string
	for i, ca := range out.CAs {
		c := *ca
		switch {
		case ca.State == StateNext && ca.AddedAt.IsZero():
			c.AddedAt = now.UTC()
		case ca.State == StateRetired && ca.RetiredAt.IsZero():
			c.RetiredAt = now.UTC()
		default:
			continue
		}
		out.CAs[i] = &c
		stamped = append(stamped, c.SKID())
	}
	return out, stamped
}

// Next returns the CA waiting to be promoted, or nil.
func (p *Pool) Next() *CA {
	for _, ca := range p.CAs {
		if ca.State == StateNext {
			return ca
		}
	}
	return nil
}

// WithNext returns a copy of the pool with ca added as next, published
// from now on. A pool holds at most one next CA.
func (p *Pool) WithNext(ca *CA, now time.Time) (*Pool, error) {
	if p.Next() != nil {
		return nil, fmt.Errorf("the %s pool already has a next CA (%s): promote or abort that rotation first", p.Signer, p.Next().SKID())
	}
	c := *ca
	c.State, c.AddedAt = StateNext, now.UTC()
	out := p.clone()
	out.CAs = append(out.CAs, &c)
	return out, nil
}

// Promoted returns a copy of the pool where next signs and the active CA
// is retired at now (published until its last leaf expires).
func (p *Pool) Promoted(now time.Time) (*Pool, error) {
	if p.Next() == nil {
		return nil, fmt.Errorf("the %s pool has no next CA to promote", p.Signer)
	}
	next := 0
	for _, ca := range p.CAs {
		if ca.State == StateNext {
			next++
		}
	}
	if next > 1 {
		// Promoting them all would leave several active CAs.
		return nil, fmt.Errorf("the %s pool has %d next CAs: remove all but one from the pool Secret (member-agent ca abort removes them all) before promoting", p.Signer, next)
	}
	out := p.clone()
	for i, ca := range out.CAs {
		c := *ca
		switch ca.State {
		case StateActive:
			c.State, c.RetiredAt = StateRetired, now.UTC()
		case StateNext:
			c.State = StateActive
		}
		out.CAs[i] = &c
	}
	return out, nil
}

// WithNextDistributedAt returns a copy of the pool whose next CA has
// DistributedAt t (zero: not distributed).
func (p *Pool) WithNextDistributedAt(t time.Time) *Pool {
	out := p.clone()
	for i, ca := range out.CAs {
		if ca.State == StateNext {
			c := *ca
			if !t.IsZero() {
				t = t.UTC()
			}
			c.DistributedAt = t
			out.CAs[i] = &c
		}
	}
	return out
}

// WithoutNext returns a copy of the pool without its next CA (an aborted
// rotation).
func (p *Pool) WithoutNext() *Pool {
	out := p.clone()
	out.CAs = slices.DeleteFunc(out.CAs, func(ca *CA) bool { return ca.State == StateNext })
	return out
}

// Pruned returns a copy without the retired CAs whose leaves have all
// expired at now, and whether any was dropped.
func (p *Pool) Pruned(now time.Time) (*Pool, bool) {
	out := p.clone()
	out.CAs = slices.DeleteFunc(out.CAs, func(ca *CA) bool { return ca.leavesExpired(now) })
	return out, len(out.CAs) != len(p.CAs)
}

func (p *Pool) clone() *Pool {
	return &Pool{Signer: p.Signer, CAs: slices.Clone(p.CAs)}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// poolJSON is the persisted form (the agent keeps it in a Secret).
type poolJSON struct {
	Signer string   `json:"signer"`
	CAs    []caJSON `json:"cas"`
}

type caJSON struct {
	State CAState `json:"state"`
	// Certificates: the signing certificate, then the chain to the anchor (PEM).
	Certificates string `json:"certificates"`
	// PrivateKey: PKCS#8 PEM.
	PrivateKey    string     `json:"privateKey"`
	RetiredAt     *time.Time `json:"retiredAt,omitempty"`
	AddedAt       *time.Time `json:"addedAt,omitempty"`
	DistributedAt *time.Time `json:"distributedAt,omitempty"`
}

// Marshal encodes the pool, private keys included.
func (p *Pool) Marshal() ([]byte, error) {
	out := poolJSON{Signer: p.Signer}
	for _, ca := range p.CAs {
		keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
		if err != nil {
			return nil, fmt.Errorf("encoding CA key: %w", err)
		}
		c := caJSON{
			State:        ca.State,
			Certificates: string(EncodeCertificatesPEM(append([]*x509.Certificate{ca.Certificate}, ca.Chain...))),
			PrivateKey:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		}
		c.RetiredAt, c.AddedAt, c.DistributedAt = timePtr(ca.RetiredAt), timePtr(ca.AddedAt), timePtr(ca.DistributedAt)
		out.CAs = append(out.CAs, c)
	}
	return json.MarshalIndent(out, "", "  ")
}

// UnmarshalPool decodes and validates a pool written by Marshal.
func UnmarshalPool(data []byte) (*Pool, error) {
	var in poolJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("decoding CA pool: %w", err)
	}
	p := &Pool{Signer: in.Signer}
	for i, c := range in.CAs {
		key, err := ParsePrivateKeyPEM([]byte(c.PrivateKey))
		if err != nil {
			return nil, fmt.Errorf("CA %d: %w", i, err)
		}
		certs, err := ParseCertificatesPEM([]byte(c.Certificates))
		if err != nil {
			return nil, fmt.Errorf("CA %d: %w", i, err)
		}
		ca := &CA{State: c.State, Certificate: certs[0], Chain: certs[1:], Key: key}
		if c.RetiredAt != nil {
			ca.RetiredAt = *c.RetiredAt
		}
		if c.AddedAt != nil {
			ca.AddedAt = *c.AddedAt
		}
		if c.DistributedAt != nil {
			ca.DistributedAt = *c.DistributedAt
		}
		p.CAs = append(p.CAs, ca)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// EncodeCertificatesPEM encodes certificates as CERTIFICATE blocks without
// headers, the only form ClusterTrustBundles and PodCertificateRequest
// chains accept.
func EncodeCertificatesPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// ParseCertificatesPEM parses one or more CERTIFICATE blocks. Anything else
// in the input (another block type, PEM headers, trailing garbage) is an
// error rather than silently skipped.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := bytes.TrimSpace(data)
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("PEM: data that is not a PEM block")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM: block of type %q where CERTIFICATE was expected", block.Type)
		}
		if len(block.Headers) > 0 {
			return nil, errors.New("PEM: CERTIFICATE blocks must not have headers")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM: certificate %d: %w", len(out)+1, err)
		}
		out = append(out, cert)
		rest = bytes.TrimSpace(rest)
	}
	if len(out) == 0 {
		return nil, errors.New("PEM: no certificate found")
	}
	return out, nil
}

// ParsePrivateKeyPEM parses one PKCS#8, PKCS#1 or SEC 1 private key block.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("private key: no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("private key: unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key: %T cannot sign", key)
	}
	return signer, nil
}
