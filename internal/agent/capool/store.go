package capool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Secret layout.
const (
	// SecretType marks anchorage CA pool Secrets.
	SecretType corev1.SecretType = "anchorage.dev/ca-pool"
	// PoolKey is the data key holding signers.Pool.Marshal output.
	PoolKey = "pool.json"
	// FieldManager is the agent's field manager (DESIGN.md).
	FieldManager = "anchorage-member-agent"
)

// SecretName is the name of the Secret holding signer's pool.
func SecretName(signer string) string { return "anchorage-ca-" + signers.Slug(signer) }

// ErrNotLoaded is returned while a pool is not loaded yet. Callers treat
// it as transient: requests wait for the pool.
var ErrNotLoaded = errors.New("CA pool not loaded yet")

// SignerConfig says how to make a signer's pool when its Secret is absent.
type SignerConfig struct {
	Profile signers.CAProfile
	// ImportSecret names a kubernetes.io/tls Secret in the agent namespace
	// whose tls.key and tls.crt (signing certificate first, then the chain
	// up to the root) become the first active CA. Empty: generate one.
	ImportSecret string
}

// Store holds the current pool of every signer.
type Store struct {
	Client    client.Client // for creating Secrets; reads come from Cache
	Cache     cache.Cache
	Namespace string
	Signers   []SignerConfig
	Env       signers.Env
	Log       logr.Logger

	pools   sync.Map // signer name -> *signers.Pool
	loaded  atomic.Bool
	mu      sync.Mutex
	subs    []chan event.GenericEvent
	lastErr sync.Map // signer name -> error
}

// Pool returns signer's current pool.
func (s *Store) Pool(signer string) (*signers.Pool, error) {
	if p, ok := s.pools.Load(signer); ok {
		return p.(*signers.Pool), nil
	}
	if err, ok := s.lastErr.Load(signer); ok {
		return nil, fmt.Errorf("%w: %w", ErrNotLoaded, err.(error))
	}
	return nil, ErrNotLoaded
}

// Loaded reports whether every signer's pool is loaded (a readiness check).
func (s *Store) Loaded() bool { return s.loaded.Load() }

// Subscribe returns a channel that receives an event each time a pool
// changes, for use as a controller-runtime source.Channel.
func (s *Store) Subscribe() <-chan event.GenericEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan event.GenericEvent, 1)
	s.subs = append(s.subs, ch)
	return ch
}

func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.subs {
		select {
		case ch <- event.GenericEvent{Object: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: "ca-pools"}}}:
		default: // one pending notification is enough: receivers read the latest pool
		}
	}
}

// NeedLeaderElection: only the leader creates missing pools; followers do
// not sign, so they need no pool.
func (s *Store) NeedLeaderElection() bool { return true }

// Start ensures every pool exists, then follows its Secret.
func (s *Store) Start(ctx context.Context) error {
	log := s.Log
	ctx = logr.NewContext(ctx, log)
	informer, err := s.Cache.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("getting the Secret informer: %w", err)
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.observe(ctx, obj) },
		UpdateFunc: func(_, obj any) { s.observe(ctx, obj) },
		DeleteFunc: func(obj any) { s.restore(ctx, obj) },
	}); err != nil {
		return fmt.Errorf("watching CA pool Secrets: %w", err)
	}
	// Each signer's pool is retried on its own: one broken pool must not
	// keep the other signer from signing. Apiserver errors are retried
	// until the pool exists; signing waits for it, it never fails for it.
	for _, sc := range s.Signers {
		go func() {
			_ = wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: 30 * time.Second},
				func(ctx context.Context) (bool, error) {
					if err := s.ensure(ctx, sc); err != nil {
						s.lastErr.Store(sc.Profile.Signer, err)
						log.Error(err, "CA pool not ready, retrying", "signer", sc.Profile.Signer)
						return false, nil
					}
					return true, nil
				})
		}()
	}
	<-ctx.Done()
	return nil
}

// ensure creates the Secret of sc if it does not exist.
func (s *Store) ensure(ctx context.Context, sc SignerConfig) error {
	name := SecretName(sc.Profile.Signer)
	var existing corev1.Secret
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, &existing)
	switch {
	case err == nil:
		pool, err := s.parse(&existing)
		if err != nil {
			return err
		}
		s.set(pool)
		return nil
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("reading Secret %s/%s: %w", s.Namespace, name, err)
	}
	pool, err := s.newPool(ctx, sc)
	if err != nil {
		return err
	}
	secret, err := poolSecret(s.Namespace, pool)
	if err != nil {
		return err
	}
	if err := s.Client.Create(ctx, secret, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return s.ensure(ctx, sc) // another replica won the race: use its pool
		}
		return fmt.Errorf("creating Secret %s/%s: %w", s.Namespace, name, err)
	}
	logr.FromContextOrDiscard(ctx).Info("created CA pool", "signer", pool.Signer, "secret", name, "skid", pool.CAs[0].SKID())
	s.set(pool)
	return nil
}

func (s *Store) newPool(ctx context.Context, sc SignerConfig) (*signers.Pool, error) {
	if sc.ImportSecret == "" {
		ca, err := signers.NewCA(s.Env, sc.Profile, nil)
		if err != nil {
			return nil, err
		}
		ca.State = signers.StateActive
		return &signers.Pool{Signer: sc.Profile.Signer, CAs: []*signers.CA{ca}}, nil
	}
	var tls corev1.Secret
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: sc.ImportSecret}, &tls); err != nil {
		return nil, fmt.Errorf("reading the CA to import from Secret %s/%s: %w", s.Namespace, sc.ImportSecret, err)
	}
	ca, err := signers.ImportCA(tls.Data[corev1.TLSPrivateKeyKey], tls.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, fmt.Errorf("importing the CA from Secret %s/%s (tls.key, and tls.crt holding the CA certificate then its chain): %w", s.Namespace, sc.ImportSecret, err)
	}
	return &signers.Pool{Signer: sc.Profile.Signer, CAs: []*signers.CA{ca}}, nil
}

// parse decodes a pool Secret and checks it was made for this signer.
func (s *Store) parse(secret *corev1.Secret) (*signers.Pool, error) {
	pool, err := signers.UnmarshalPool(secret.Data[PoolKey])
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	for _, sc := range s.Signers {
		if SecretName(sc.Profile.Signer) == secret.Name && pool.Signer != sc.Profile.Signer {
			return nil, fmt.Errorf("Secret %s/%s holds a pool for signer %q, not %q", secret.Namespace, secret.Name, pool.Signer, sc.Profile.Signer)
		}
	}
	return pool, nil
}

func (s *Store) set(pool *signers.Pool) {
	s.lastErr.Delete(pool.Signer)
	if old, ok := s.pools.Load(pool.Signer); ok && samePool(old.(*signers.Pool), pool) {
		return
	}
	s.pools.Store(pool.Signer, pool)
	all := true
	for _, sc := range s.Signers {
		if _, ok := s.pools.Load(sc.Profile.Signer); !ok {
			all = false
		}
	}
	s.loaded.Store(all)
	s.notify()
}

func (s *Store) observe(ctx context.Context, obj any) {
	secret, ok := obj.(*corev1.Secret)
	if !ok || !s.ours(secret.Name) {
		return
	}
	pool, err := s.parse(secret)
	if err != nil {
		// Keep signing with the last good pool; say loudly why the new one
		// is not used.
		logr.FromContextOrDiscard(ctx).Error(err, "ignoring an invalid CA pool update; the previous pool stays in use")
		return
	}
	s.set(pool)
}

// restore writes the in-memory pool back when its Secret is deleted:
// generating a new CA would silently break trust with every peer.
func (s *Store) restore(ctx context.Context, obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	secret, ok := obj.(*corev1.Secret)
	if !ok || !s.ours(secret.Name) {
		return
	}
	for _, sc := range s.Signers {
		if SecretName(sc.Profile.Signer) != secret.Name {
			continue
		}
		p, ok := s.pools.Load(sc.Profile.Signer)
		if !ok {
			return
		}
		log := logr.FromContextOrDiscard(ctx)
		log.Info("CA pool Secret was deleted; writing the in-memory pool back", "secret", secret.Name)
		go func() {
			_ = wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: time.Second, Factor: 2, Steps: 1 << 30, Cap: 30 * time.Second}, func(ctx context.Context) (bool, error) {
				fresh, err := poolSecret(s.Namespace, p.(*signers.Pool))
				if err == nil {
					err = s.Client.Create(ctx, fresh, client.FieldOwner(FieldManager))
				}
				if err != nil && !apierrors.IsAlreadyExists(err) {
					log.Error(err, "restoring CA pool Secret", "secret", secret.Name)
					return false, nil
				}
				return true, nil
			})
		}()
	}
}

func (s *Store) ours(name string) bool {
	for _, sc := range s.Signers {
		if SecretName(sc.Profile.Signer) == name {
			return true
		}
	}
	return false
}

func poolSecret(namespace string, pool *signers.Pool) (*corev1.Secret, error) {
	data, err := pool.Marshal()
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      SecretName(pool.Signer),
			Labels:    map[string]string{"app.kubernetes.io/part-of": "anchorage", "app.kubernetes.io/component": "ca-pool"},
		},
		Type: SecretType,
		Data: map[string][]byte{PoolKey: data},
	}, nil
}

func samePool(a, b *signers.Pool) bool {
	if len(a.CAs) != len(b.CAs) {
		return false
	}
	for i := range a.CAs {
		if a.CAs[i].State != b.CAs[i].State || !a.CAs[i].Certificate.Equal(b.CAs[i].Certificate) || !a.CAs[i].RetiredAt.Equal(b.CAs[i].RetiredAt) {
			return false
		}
	}
	return true
}
