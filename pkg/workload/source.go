package workload

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// CredentialBundleFileName is the credential file name of the SPIFFE
// filesystem-delivery draft: one PKCS#8 PRIVATE KEY block followed by the
// certificate chain, leaf first.
const CredentialBundleFileName = "credential-bundle.pem"

// TrustBundleFileName is the file name of a peer trust domain's bundle in
// the SPIFFE filesystem-delivery draft: <trust-domain>.spiffe-trust-bundle.pem.
func TrustBundleFileName(td spiffeid.TrustDomain) string {
	return td.Name() + ".spiffe-trust-bundle.pem"
}

// DefaultRefreshInterval is how often files are re-read when no file event
// arrived.
const DefaultRefreshInterval = time.Minute

// debounce coalesces the burst of events of one kubelet swap.
const debounce = 50 * time.Millisecond

// Options says which files a Source loads.
type Options struct {
	// CredentialBundleFile holds the private key (first PEM block) and the
	// certificate chain, leaf first, as the kubelet projects a pod
	// certificate. Mutually exclusive with KeyFile/CertificateChainFile.
	CredentialBundleFile string
	// KeyFile and CertificateChainFile are the key and the chain in two
	// files (credentialBundlePath unset, keyPath and certificateChainPath
	// set in the projection).
	KeyFile              string
	CertificateChainFile string
	// TrustBundleFiles maps each peer trust domain to its bundle file. A
	// peer is only ever verified against the bundle of its own trust domain.
	// An empty file is an empty bundle (the peer has no anchors yet).
	TrustBundleFiles map[spiffeid.TrustDomain]string
	// DNSTrustBundleFiles hold service-dns trust anchors (for example the
	// local and the clusterset bundles); they are pooled together.
	DNSTrustBundleFiles []string
	// RefreshInterval is the periodic re-read fallback; zero means
	// DefaultRefreshInterval, negative disables it.
	RefreshInterval time.Duration
	// DisableWatch turns off fsnotify watching, leaving only the tick.
	DisableWatch bool
	// Logger reports reloads and errors; the zero value discards.
	Logger logr.Logger
	// OnError is called with every failed background reload; the Source
	// keeps the last good material. It must not block for long.
	OnError func(error)
}

// Validate checks the options name something to load.
func (o *Options) Validate() error {
	bundle := o.CredentialBundleFile != ""
	split := o.KeyFile != "" || o.CertificateChainFile != ""
	switch {
	case bundle && split:
		return errors.New("set either the credential bundle file or the key and certificate chain files, not both")
	case split && (o.KeyFile == "" || o.CertificateChainFile == ""):
		return errors.New("the key file and the certificate chain file go together: set both")
	case !bundle && !split && len(o.TrustBundleFiles) == 0 && len(o.DNSTrustBundleFiles) == 0:
		return errors.New("nothing to load: set a credential file or trust bundle files")
	}
	for td, path := range o.TrustBundleFiles {
		if td.IsZero() {
			return errors.New("trust bundle file for an empty trust domain")
		}
		if path == "" {
			return fmt.Errorf("trust bundle file of %q: empty path", td)
		}
	}
	return nil
}

func (o *Options) hasCredential() bool {
	return o.CredentialBundleFile != "" || o.KeyFile != ""
}

// credential is the parsed credential of the pod.
type credential struct {
	raw  []byte
	cert *tls.Certificate
	// svid is nil when the leaf is not an X509-SVID (a service-dns leaf).
	svid    *x509svid.SVID
	svidErr error
}

type material struct {
	cred       *credential
	bundlesRaw map[spiffeid.TrustDomain][]byte
	bundles    map[spiffeid.TrustDomain]*x509bundle.Bundle
	dnsRaw     [][]byte
	dnsRoots   *x509.CertPool
}

// Source holds the current workload credential and trust bundles. It is
// safe for concurrent use.
type Source struct {
	opts Options
	log  logr.Logger

	reloadMu sync.Mutex
	cur      atomic.Pointer[material]

	watcher   *fsnotify.Watcher
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// New loads every file of opts and starts watching them. The first load must
// succeed. The watch stops with Close or when ctx ends.
func New(ctx context.Context, opts Options) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.RefreshInterval == 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	s := &Source{opts: opts, log: opts.Logger, done: make(chan struct{})}
	if err := s.Reload(); err != nil {
		return nil, fmt.Errorf("loading workload credentials: %w", err)
	}
	if !opts.DisableWatch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return nil, fmt.Errorf("watching workload credential files: %w", err)
		}
		for _, dir := range s.dirs() {
			// The kubelet replaces "..data" inside the folder: watch the
			// folder, since a watch on a file follows the replaced inode.
			if err := w.Add(dir); err != nil {
				_ = w.Close()
				return nil, fmt.Errorf("watching %s: %w", dir, err)
			}
		}
		s.watcher = w
	}
	s.wg.Add(1)
	go s.run(ctx)
	return s, nil
}

// Close stops watching. The Source keeps serving the last material.
func (s *Source) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		if s.watcher != nil {
			err = s.watcher.Close()
		}
		s.wg.Wait()
	})
	return err
}

func (s *Source) dirs() []string {
	var files []string
	if s.opts.CredentialBundleFile != "" {
		files = append(files, s.opts.CredentialBundleFile)
	}
	if s.opts.KeyFile != "" {
		files = append(files, s.opts.KeyFile, s.opts.CertificateChainFile)
	}
	for _, p := range s.opts.TrustBundleFiles {
		files = append(files, p)
	}
	files = append(files, s.opts.DNSTrustBundleFiles...)
	var dirs []string
	for _, f := range files {
		d := filepath.Dir(f)
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return dirs
}

func (s *Source) run(ctx context.Context) {
	defer s.wg.Done()
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
		tick   <-chan time.Time
	)
	if s.watcher != nil {
		events, errs = s.watcher.Events, s.watcher.Errors
	}
	if s.opts.RefreshInterval > 0 {
		t := time.NewTicker(s.opts.RefreshInterval)
		defer t.Stop()
		tick = t.C
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			timer.Reset(debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.report(fmt.Errorf("watching workload credential files: %w", err))
		case <-timer.C:
			s.reloadAndReport()
		case <-tick:
			s.reloadAndReport()
		}
	}
}

func (s *Source) reloadAndReport() {
	if err := s.Reload(); err != nil {
		s.report(err)
	}
}

func (s *Source) report(err error) {
	s.log.Error(err, "Reloading workload credentials failed; keeping the last good material")
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

// Reload re-reads every file now. Each part (credential, each trust bundle,
// the DNS roots) that fails to load keeps its last good value; the errors
// are returned joined.
func (s *Source) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	prev := s.cur.Load()
	if prev == nil {
		prev = &material{}
	}
	next := *prev
	changed := false
	var errs []error

	if s.opts.hasCredential() {
		raw, cred, err := s.loadCredential(prev.cred)
		switch {
		case err != nil:
			errs = append(errs, err)
		case prev.cred == nil || !bytes.Equal(raw, prev.cred.raw):
			next.cred, changed = cred, true
			s.log.V(1).Info("Loaded workload certificate", "serial", cred.cert.Leaf.SerialNumber.String(), "notAfter", cred.cert.Leaf.NotAfter)
		}
	}

	next.bundlesRaw = make(map[spiffeid.TrustDomain][]byte, len(s.opts.TrustBundleFiles))
	next.bundles = make(map[spiffeid.TrustDomain]*x509bundle.Bundle, len(s.opts.TrustBundleFiles))
	for td, path := range s.opts.TrustBundleFiles {
		oldRaw, hadOld := prev.bundlesRaw[td]
		if hadOld {
			next.bundlesRaw[td], next.bundles[td] = oldRaw, prev.bundles[td]
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the trust bundle of %q: %w", td, err))
			continue
		}
		if hadOld && bytes.Equal(raw, oldRaw) {
			continue
		}
		b, err := parseBundle(td, raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("trust bundle of %q in %s: %w", td, path, err))
			continue
		}
		next.bundlesRaw[td], next.bundles[td], changed = raw, b, true
		s.log.V(1).Info("Loaded trust bundle", "trustDomain", td.Name(), "anchors", len(b.X509Authorities()))
	}

	if len(s.opts.DNSTrustBundleFiles) > 0 {
		raws := make([][]byte, len(s.opts.DNSTrustBundleFiles))
		var err error
		for i, path := range s.opts.DNSTrustBundleFiles {
			if raws[i], err = os.ReadFile(path); err != nil {
				err = fmt.Errorf("reading the DNS trust bundle: %w", err)
				break
			}
		}
		if err == nil && !slices.EqualFunc(raws, prev.dnsRaw, bytes.Equal) {
			var pool *x509.CertPool
			if pool, err = parseDNSRoots(s.opts.DNSTrustBundleFiles, raws); err == nil {
				next.dnsRaw, next.dnsRoots, changed = raws, pool, true
				s.log.V(1).Info("Loaded DNS trust bundle")
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}

	if changed || s.cur.Load() == nil {
		s.cur.Store(&next)
	}
	return errors.Join(errs...)
}

func (s *Source) loadCredential(prev *credential) ([]byte, *credential, error) {
	var keyPEM, chainPEM, raw []byte
	if f := s.opts.CredentialBundleFile; f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the credential bundle: %w", err)
		}
		raw = data
		if prev != nil && bytes.Equal(raw, prev.raw) {
			return raw, prev, nil
		}
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, nil, fmt.Errorf("credential bundle %s: no PEM block; it must start with the private key", f)
		}
		keyPEM, chainPEM = pem.EncodeToMemory(block), rest
	} else {
		var err error
		if keyPEM, err = os.ReadFile(s.opts.KeyFile); err != nil {
			return nil, nil, fmt.Errorf("reading the private key: %w", err)
		}
		if chainPEM, err = os.ReadFile(s.opts.CertificateChainFile); err != nil {
			return nil, nil, fmt.Errorf("reading the certificate chain: %w", err)
		}
		raw = append(append(slices.Clip(keyPEM), 0), chainPEM...)
		if prev != nil && bytes.Equal(raw, prev.raw) {
			return raw, prev, nil
		}
	}
	cred, err := parseCredential(keyPEM, chainPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("workload credential: %w", err)
	}
	cred.raw = raw
	return raw, cred, nil
}

func parseCredential(keyPEM, chainPEM []byte) (*credential, error) {
	key, err := signers.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	chain, err := signers.ParseCertificatesPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate chain: %w", err)
	}
	leaf := chain[0]
	if !publicKeyEqual(key.Public(), leaf.PublicKey) {
		return nil, errors.New("the private key does not match the leaf certificate")
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	var der []byte
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
		der = append(der, c.Raw...)
	}
	cred := &credential{cert: cert}
	if len(leaf.URIs) > 0 {
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		if cred.svid, err = x509svid.ParseRaw(der, keyDER); err != nil {
			return nil, fmt.Errorf("X509-SVID: %w", err)
		}
	} else {
		cred.svidErr = errors.New("the workload certificate is not an X509-SVID (it has no SPIFFE ID)")
	}
	return cred, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

func parseBundle(td spiffeid.TrustDomain, raw []byte) (*x509bundle.Bundle, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return x509bundle.New(td), nil
	}
	certs, err := signers.ParseCertificatesPEM(raw)
	if err != nil {
		return nil, err
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}

func parseDNSRoots(paths []string, raws [][]byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for i, raw := range raws {
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		certs, err := signers.ParseCertificatesPEM(raw)
		if err != nil {
			return nil, fmt.Errorf("DNS trust bundle %s: %w", paths[i], err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// GetX509SVID returns the current X509-SVID (x509svid.Source). It fails
// when the Source has no credential or the credential is not an X509-SVID.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	c := s.cur.Load().cred
	if c == nil {
		return nil, errors.New("workload: no credential configured")
	}
	if c.svid == nil {
		return nil, fmt.Errorf("workload: %w", c.svidErr)
	}
	return c.svid, nil
}

// GetX509BundleForTrustDomain returns the current bundle of td
// (x509bundle.Source).
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, ok := s.cur.Load().bundles[td]
	if !ok {
		return nil, fmt.Errorf("workload: no trust bundle for trust domain %q", td)
	}
	return b, nil
}

// Certificate returns the current certificate, leaf parsed, or nil when
// the Source has no credential.
func (s *Source) Certificate() *tls.Certificate {
	if c := s.cur.Load().cred; c != nil {
		return c.cert
	}
	return nil
}

// DNSRoots returns the current service-dns trust anchors, or nil when no
// DNS trust bundle file is configured. Do not modify the pool.
func (s *Source) DNSRoots() *x509.CertPool {
	return s.cur.Load().dnsRoots
}
