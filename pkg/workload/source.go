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
	"strings"
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

// dataDirName is the symlink the kubelet swaps in a projected volume's root.
const dataDirName = "..data"

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
	// LocalDNSTrustBundleFiles hold this cluster's service-dns anchors: a
	// clusterTrustBundle projection of anchorage.dev/service-dns selecting
	// service-dns.anchorage.dev/scope=cluster (anchorage.dev:service-dns:local).
	// They verify every name outside svc.clusterset.local.
	LocalDNSTrustBundleFiles []string
	// ClustersetDNSTrustBundleFiles hold every clusterset member's
	// service-dns anchors (scope=clusterset,
	// anchorage.dev:service-dns:clusterset). They verify only names under
	// svc.clusterset.local: each member's CA may sign "svc" names too, so
	// they must never vouch for a name of this cluster.
	ClustersetDNSTrustBundleFiles []string
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
	case !bundle && !split && len(o.TrustBundleFiles) == 0 && len(o.LocalDNSTrustBundleFiles) == 0 && len(o.ClustersetDNSTrustBundleFiles) == 0:
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

// dnsScope is which service-dns bundle anchors a name: the cluster's own
// or the clusterset's.
type dnsScope int

const (
	scopeLocal dnsScope = iota
	scopeClusterset
	numScopes
)

// clustersetSuffix ends the MCS names that the clusterset's anchors verify.
const clustersetSuffix = ".svc." + signers.ClustersetDomain

// IsClustersetName says whether name is an MCS name (under
// svc.clusterset.local), which the clusterset's service-dns anchors verify;
// any other name is verified by this cluster's own anchors.
func IsClustersetName(name string) bool {
	return strings.HasSuffix(strings.TrimSuffix(strings.ToLower(name), "."), clustersetSuffix)
}

// scopeOf is the scope whose anchors verify name.
func scopeOf(name string) dnsScope {
	if IsClustersetName(name) {
		return scopeClusterset
	}
	return scopeLocal
}

func (s dnsScope) String() string {
	if s == scopeClusterset {
		return "clusterset"
	}
	return "local"
}

type material struct {
	cred       *credential
	bundlesRaw map[spiffeid.TrustDomain][]byte
	bundles    map[spiffeid.TrustDomain]*x509bundle.Bundle
	dnsRaw     [numScopes][][]byte
	dnsRoots   [numScopes]*x509.CertPool
}

// Source holds the current workload credential and trust bundles. It is
// safe for concurrent use.
type Source struct {
	opts Options
	log  logr.Logger

	reloadMu sync.Mutex
	cur      atomic.Pointer[material]
	// readFile reads a file (os.ReadFile; tests swap files between reads).
	readFile func(string) ([]byte, error)

	watcher     *fsnotify.Watcher
	watcherOnce sync.Once
	watcherErr  error
	done        chan struct{}
	wg          sync.WaitGroup
	closeOnce   sync.Once
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// New loads every file of opts and starts watching them. The first load must
// succeed. The watch stops with Close or when ctx ends. When the files
// cannot be watched (inotify limits), the periodic refresh carries on
// alone and the error is reported through OnError; New fails then only if
// the periodic refresh is disabled.
func New(ctx context.Context, opts Options) (*Source, error) {
	return newSource(ctx, opts, fsnotify.NewWatcher)
}

func newSource(ctx context.Context, opts Options, newWatcher func() (*fsnotify.Watcher, error)) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.RefreshInterval == 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	s := &Source{opts: opts, log: opts.Logger, done: make(chan struct{}), readFile: os.ReadFile}
	if err := s.Reload(); err != nil {
		return nil, fmt.Errorf("loading workload credentials: %w", err)
	}
	if !opts.DisableWatch {
		if err := s.startWatch(newWatcher); err != nil {
			if opts.RefreshInterval < 0 {
				return nil, fmt.Errorf("%w; nothing else would reload them: set a RefreshInterval", err)
			}
			s.report(fmt.Errorf("%w; re-reading them every %s instead", err, opts.RefreshInterval))
		}
	}
	s.wg.Add(1)
	go s.run(ctx)
	return s, nil
}

func (s *Source) startWatch(newWatcher func() (*fsnotify.Watcher, error)) error {
	w, err := newWatcher()
	if err != nil {
		return fmt.Errorf("watching workload credential files: %w", err)
	}
	s.watcher = w
	if err := s.rewatch(); err != nil {
		s.closeWatcher()
		s.watcher = nil
		return err
	}
	return nil
}

// rewatch adds the watches that are missing: all of them at first, later
// a folder whose watch died because it was removed and made again.
func (s *Source) rewatch() error {
	if s.watcher == nil {
		return nil
	}
	watched := s.watcher.WatchList()
	var errs []error
	for _, dir := range s.dirs() {
		if slices.Contains(watched, dir) {
			continue
		}
		if err := s.watcher.Add(dir); err != nil && !errors.Is(err, fsnotify.ErrClosed) {
			errs = append(errs, fmt.Errorf("watching %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Source) closeWatcher() {
	s.watcherOnce.Do(func() {
		if s.watcher != nil {
			s.watcherErr = s.watcher.Close()
		}
	})
}

// Close stops watching. The Source keeps serving the last material.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.closeWatcher()
		s.wg.Wait()
	})
	return s.watcherErr
}

// dirs are the folders to watch. The kubelet replaces "..data" in the root
// of a projected volume: the root is watched, since a watch on a file, or
// on a nested folder (a symlink into the timestamped folder), follows the
// inode the kubelet removes. Files outside a projected volume are watched
// through their folder.
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
	files = append(files, s.opts.LocalDNSTrustBundleFiles...)
	files = append(files, s.opts.ClustersetDNSTrustBundleFiles...)
	var dirs []string
	for _, f := range files {
		d := watchDir(f)
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return dirs
}

// watchDir is the projected volume root above file (the folder holding
// "..data"), or file's folder when there is none.
func watchDir(file string) string {
	dir := filepath.Dir(filepath.Clean(file))
	for d := dir; ; {
		if fi, err := os.Lstat(filepath.Join(d, dataDirName)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return dir
		}
		d = parent
	}
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
			s.closeWatcher()
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
	if err := errors.Join(s.Reload(), s.rewatch()); err != nil {
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
		raw, err := s.readFile(path)
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

	for scope, paths := range s.dnsFiles() {
		raws, pool, err := s.loadDNSRoots(dnsScope(scope), paths, prev.dnsRaw[scope])
		switch {
		case err != nil:
			errs = append(errs, err)
		case pool != nil:
			next.dnsRaw[scope], next.dnsRoots[scope], changed = raws, pool, true
			s.log.V(1).Info("Loaded DNS trust bundle", "scope", dnsScope(scope).String())
		}
	}

	if changed || s.cur.Load() == nil {
		s.cur.Store(&next)
	}
	return errors.Join(errs...)
}

func (s *Source) loadCredential(prev *credential) ([]byte, *credential, error) {
	f := s.opts.CredentialBundleFile
	if f == "" {
		return s.loadSplitCredential(prev, true)
	}
	raw, err := s.readFile(f)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the credential bundle: %w", err)
	}
	if prev != nil && bytes.Equal(raw, prev.raw) {
		return raw, prev, nil
	}
	block, rest := pem.Decode(raw)
	if block == nil {
		return nil, nil, fmt.Errorf("credential bundle %s: no PEM block; it must start with the private key", f)
	}
	cred, err := parseCredential(pem.EncodeToMemory(block), rest)
	if err != nil {
		return nil, nil, fmt.Errorf("workload credential: %w", err)
	}
	cred.raw = raw
	return raw, cred, nil
}

// loadSplitCredential reads the key and the chain from their two files.
// The kubelet may swap the volume between the two reads: a key that does
// not match the chain is read again once before it counts as an error.
func (s *Source) loadSplitCredential(prev *credential, retry bool) ([]byte, *credential, error) {
	keyPEM, err := s.readFile(s.opts.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the private key: %w", err)
	}
	chainPEM, err := s.readFile(s.opts.CertificateChainFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the certificate chain: %w", err)
	}
	raw := append(append(slices.Clip(keyPEM), 0), chainPEM...)
	if prev != nil && bytes.Equal(raw, prev.raw) {
		return raw, prev, nil
	}
	cred, err := parseCredential(keyPEM, chainPEM)
	if errors.Is(err, errKeyMismatch) && retry {
		return s.loadSplitCredential(prev, false)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("workload credential: %w", err)
	}
	cred.raw = raw
	return raw, cred, nil
}

// dnsFiles are the DNS trust bundle files of each scope.
func (s *Source) dnsFiles() [numScopes][]string {
	return [numScopes][]string{scopeLocal: s.opts.LocalDNSTrustBundleFiles, scopeClusterset: s.opts.ClustersetDNSTrustBundleFiles}
}

// loadDNSRoots reads the files of one scope. The pool is nil when there
// are no files or they did not change since prevRaws.
func (s *Source) loadDNSRoots(scope dnsScope, paths []string, prevRaws [][]byte) ([][]byte, *x509.CertPool, error) {
	if len(paths) == 0 {
		return nil, nil, nil
	}
	raws := make([][]byte, len(paths))
	for i, path := range paths {
		var err error
		if raws[i], err = s.readFile(path); err != nil {
			return nil, nil, fmt.Errorf("reading the %s DNS trust bundle: %w", scope, err)
		}
	}
	if prevRaws != nil && slices.EqualFunc(raws, prevRaws, bytes.Equal) {
		return nil, nil, nil
	}
	pool, err := parseDNSRoots(paths, raws)
	if err != nil {
		return nil, nil, err
	}
	return raws, pool, nil
}

var errKeyMismatch = errors.New("the private key does not match the leaf certificate")

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
		return nil, errKeyMismatch
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

// DNSRoots returns the current service-dns trust anchors that verify name:
// the clusterset's for a name under svc.clusterset.local, this cluster's
// for any other name; nil when no file of that scope is configured. Do not
// modify the pool.
func (s *Source) DNSRoots(name string) *x509.CertPool {
	return s.cur.Load().dnsRoots[scopeOf(name)]
}
