package v1alpha1

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The rules below are the CRD schema's, written in Go. Every limit and pattern
// here has a twin in a kubebuilder marker in *_types.go; TestSchemaAgreement
// creates the same objects through a real apiserver and checks that both
// reach the same verdict, and TestSchemaPatterns checks the patterns are the
// same strings.
const (
	// maxTrustDomainLen keeps a trust domain name usable as a label value.
	maxTrustDomainLen = 63 // validation.LabelValueMaxLength
	// maxURLLen bounds issuer and bundle endpoint URLs.
	maxURLLen = 2048
	// maxSPIFFEIDLen is the SPIFFE ID limit of SPIFFE-ID.md, section 2.3.
	maxSPIFFEIDLen = 2048
	// maxBootstrapBundleLen bounds spec.bootstrapBundle (1 MiB).
	maxBootstrapBundleLen = 1 << 20
	// maxFederatesWith bounds spec.federatesWith; "*" covers more.
	maxFederatesWith = 1024

	trustDomainNamePattern     = `^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`
	federatesWithPattern       = `^(\*|[a-z0-9]([a-z0-9._-]*[a-z0-9])?)$`
	agentServiceAccountPattern = `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	endpointSPIFFEIDPattern    = `^spiffe://[a-z0-9._-]+(/([a-zA-Z0-9_-][a-zA-Z0-9._-]*|\.[a-zA-Z0-9_-][a-zA-Z0-9._-]*|\.\.[a-zA-Z0-9._-]+))*$`
)

var (
	trustDomainNameRE  = regexp.MustCompile(trustDomainNamePattern)
	endpointSPIFFEIDRE = regexp.MustCompile(endpointSPIFFEIDPattern)
)

// ValidateClusterName checks a cluster id, the name of a MemberCluster: a DNS
// label (RFC 1123), at most 63 characters.
func ValidateClusterName(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("cluster id %q is not a DNS label: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// ValidateTrustDomainName checks a SPIFFE trust domain name as the hub accepts
// it: the SPIFFE grammar (lowercase letters, digits, '.', '_' and '-', checked
// with go-spiffe), and, so that it can be a label value, at most 63 characters
// starting and ending with a letter or digit. A SPIFFE ID is not a trust
// domain name.
func ValidateTrustDomainName(s string) error {
	if s == "" {
		return errors.New("trust domain name must not be empty")
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return fmt.Errorf("trust domain name %q: %w", s, err)
	}
	if td.Name() != s {
		return fmt.Errorf("%q is a SPIFFE ID, not a trust domain name: use %q", s, td.Name())
	}
	if n := utf8.RuneCountInString(s); n > maxTrustDomainLen {
		return fmt.Errorf("trust domain name %q is %d characters long; at most %d are allowed so that it can be a label value", s, n, maxTrustDomainLen)
	}
	if !trustDomainNameRE.MatchString(s) {
		return fmt.Errorf("trust domain name %q must start and end with a lowercase letter or digit", s)
	}
	return nil
}

// ParseAgentServiceAccount splits a MemberCluster's spec.agentServiceAccount,
// "namespace/name", and checks both parts: the namespace is a DNS label, the
// name a DNS subdomain. An empty s is an error; see
// MemberClusterSpec.AgentServiceAccountRef for the defaulted value.
func ParseAgentServiceAccount(s string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, "/")
	if !ok {
		return "", "", fmt.Errorf("agent service account %q must be \"namespace/name\", e.g. %q", s, DefaultAgentServiceAccount)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return "", "", fmt.Errorf("agent service account %q: namespace %q: %s", s, namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", "", fmt.Errorf("agent service account %q: name %q: %s", s, name, strings.Join(errs, "; "))
	}
	return namespace, name, nil
}

// AgentServiceAccountRef returns the namespace and name of the agent's service
// account, applying the default when spec.agentServiceAccount is empty.
func (s *MemberClusterSpec) AgentServiceAccountRef() (namespace, name string, err error) {
	sa := s.AgentServiceAccount
	if sa == "" {
		sa = DefaultAgentServiceAccount
	}
	return ParseAgentServiceAccount(sa)
}

// ValidateHTTPSURL checks an issuer or bundle endpoint URL: an absolute https
// URL with a host and without user info, query or fragment, at most 2048
// characters. It parses the way the apiserver's CEL url() does.
func ValidateHTTPSURL(s string) error {
	if s == "" {
		return errors.New("URL must not be empty")
	}
	if n := utf8.RuneCountInString(s); n > maxURLLen {
		return fmt.Errorf("URL is %d characters long; at most %d are allowed", n, maxURLLen)
	}
	if _, err := url.ParseRequestURI(s); err != nil {
		return fmt.Errorf("URL %q: %w", s, err)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("URL %q: %w", s, err)
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("URL %q must use https", s)
	case u.Hostname() == "":
		return fmt.Errorf("URL %q has no host", s)
	case strings.ContainsAny(s, "?#"):
		return fmt.Errorf("URL %q must not have a query or fragment", s)
	}
	// As the schema's rule: the authority is the third "/"-separated part of
	// an https URL with a host.
	if parts := strings.Split(s, "/"); len(parts) < 3 || strings.Contains(parts[2], "@") {
		return fmt.Errorf("URL %q must not carry user info", s)
	}
	return nil
}

// ValidateEndpointSPIFFEID checks a bundle endpoint's SPIFFE ID: the SPIFFE
// grammar (checked with go-spiffe), at most 2048 characters.
func ValidateEndpointSPIFFEID(s string) error {
	if n := utf8.RuneCountInString(s); n > maxSPIFFEIDLen {
		return fmt.Errorf("SPIFFE ID is %d characters long; at most %d are allowed", n, maxSPIFFEIDLen)
	}
	if _, err := spiffeid.FromString(s); err != nil {
		return fmt.Errorf("SPIFFE ID %q: %w", s, err)
	}
	// go-spiffe built with the spiffeid_charset_backcompat tag accepts more
	// characters than the schema; the schema's pattern is the contract.
	if !endpointSPIFFEIDRE.MatchString(s) {
		return fmt.Errorf("SPIFFE ID %q has characters outside the SPIFFE grammar", s)
	}
	return nil
}

// Validate checks metadata.name and spec of a MemberCluster with the CRD
// schema's rules (defaults not applied count as applied). It returns nil or
// an aggregate of *field.Error.
func (m *MemberCluster) Validate() error {
	return m.validate().ToAggregate()
}

func (m *MemberCluster) validate() field.ErrorList {
	var errs field.ErrorList
	if err := ValidateClusterName(m.Name); err != nil {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), m.Name, err.Error()))
	}
	spec := field.NewPath("spec")
	if err := ValidateHTTPSURL(m.Spec.Issuer); err != nil {
		errs = append(errs, field.Invalid(spec.Child("issuer"), m.Spec.Issuer, err.Error()))
	}
	if err := ValidateTrustDomainName(m.Spec.TrustDomain); err != nil {
		errs = append(errs, field.Invalid(spec.Child("trustDomain"), m.Spec.TrustDomain, err.Error()))
	}
	if _, _, err := m.Spec.AgentServiceAccountRef(); err != nil {
		errs = append(errs, field.Invalid(spec.Child("agentServiceAccount"), m.Spec.AgentServiceAccount, err.Error()))
	}
	fw := spec.Child("federatesWith")
	if n := len(m.Spec.FederatesWith); n > maxFederatesWith {
		errs = append(errs, field.TooMany(fw, n, maxFederatesWith))
	}
	seen := make(map[string]bool, len(m.Spec.FederatesWith))
	for i, td := range m.Spec.FederatesWith {
		if seen[td] {
			errs = append(errs, field.Duplicate(fw.Index(i), td))
		}
		seen[td] = true
		if td == FederateWithAll {
			continue
		}
		if err := ValidateTrustDomainName(td); err != nil {
			errs = append(errs, field.Invalid(fw.Index(i), td, err.Error()))
		}
	}
	return errs
}

// ValidateUpdate checks m as Validate does, and that the change from old is
// allowed: spec.issuer and spec.trustDomain are immutable.
func (m *MemberCluster) ValidateUpdate(old *MemberCluster) error {
	errs := m.validate()
	if m.Spec.Issuer != old.Spec.Issuer {
		errs = append(errs, field.Invalid(field.NewPath("spec", "issuer"), m.Spec.Issuer,
			"issuer is immutable: delete and re-create the MemberCluster to change it"))
	}
	if m.Spec.TrustDomain != old.Spec.TrustDomain {
		errs = append(errs, field.Invalid(field.NewPath("spec", "trustDomain"), m.Spec.TrustDomain,
			"trustDomain is immutable: delete and re-create the MemberCluster to change it"))
	}
	return errs.ToAggregate()
}

// Validate checks the spec of a TrustDomain with the CRD schema's rules. It
// does not parse spec.bootstrapBundle (the schema cannot); the hub reports a
// bad one as condition Ready=False, reason InvalidBundle. It returns nil or an
// aggregate of *field.Error.
func (t *TrustDomain) Validate() error {
	return t.validate().ToAggregate()
}

// ValidateUpdate checks t as Validate does, and that the change from old is
// allowed: spec.trustDomain is immutable (status.bundle is that trust
// domain's).
func (t *TrustDomain) ValidateUpdate(old *TrustDomain) error {
	errs := t.validate()
	if t.Spec.TrustDomain != old.Spec.TrustDomain {
		errs = append(errs, field.Invalid(field.NewPath("spec", "trustDomain"), t.Spec.TrustDomain,
			"trustDomain is immutable: create a new TrustDomain for another trust domain (and delete this one)"))
	}
	return errs.ToAggregate()
}

func (t *TrustDomain) validate() field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if err := ValidateTrustDomainName(t.Spec.TrustDomain); err != nil {
		errs = append(errs, field.Invalid(spec.Child("trustDomain"), t.Spec.TrustDomain, err.Error()))
	}
	ep, be := spec.Child("bundleEndpoint"), t.Spec.BundleEndpoint
	if err := ValidateHTTPSURL(be.URL); err != nil {
		errs = append(errs, field.Invalid(ep.Child("url"), be.URL, err.Error()))
	}
	switch be.Profile {
	case ProfileHTTPSWeb, ProfileHTTPSSPIFFE:
	default:
		errs = append(errs, field.NotSupported(ep.Child("profile"), be.Profile, []BundleEndpointProfile{ProfileHTTPSWeb, ProfileHTTPSSPIFFE}))
	}
	id := ep.Child("endpointSPIFFEID")
	switch {
	case be.EndpointSPIFFEID != "":
		if err := ValidateEndpointSPIFFEID(be.EndpointSPIFFEID); err != nil {
			errs = append(errs, field.Invalid(id, be.EndpointSPIFFEID, err.Error()))
		}
		if be.Profile != ProfileHTTPSSPIFFE {
			errs = append(errs, field.Forbidden(id, "endpointSPIFFEID is only used with profile https_spiffe"))
		}
	case be.Profile == ProfileHTTPSSPIFFE:
		errs = append(errs, field.Required(id, "endpointSPIFFEID is required when profile is https_spiffe"))
	}
	if be.EndpointSPIFFEID != "" && t.Spec.BootstrapBundle == "" {
		self := "spiffe://" + t.Spec.TrustDomain
		if be.EndpointSPIFFEID == self || strings.HasPrefix(be.EndpointSPIFFEID, self+"/") {
			errs = append(errs, field.Required(spec.Child("bootstrapBundle"),
				"bootstrapBundle is required when endpointSPIFFEID is in the trust domain itself: the hub needs it to authenticate its first fetch"))
		}
	}
	if n := utf8.RuneCountInString(t.Spec.BootstrapBundle); n > maxBootstrapBundleLen {
		errs = append(errs, field.TooLong(spec.Child("bootstrapBundle"), "", maxBootstrapBundleLen))
	}
	return errs
}
