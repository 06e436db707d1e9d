package localcluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/utils/ptr"
)

// configTokenTTL is the lifetime of the tokens behind ConfigFor; they are
// re-minted before they expire, so it only bounds how stale one can get.
const configTokenTTL = time.Hour

// Token mints a service-account token with the TokenRequest API, as the kubelet
// does for projected token volumes (without a bound object). audiences nil =
// the apiserver's audiences (the issuer), which the apiserver itself accepts;
// ttl 0 = 1 hour (the apiserver's minimum is 10 minutes). The namespace and
// ServiceAccount are created if missing.
func (c *Cluster) Token(ctx context.Context, namespace, serviceAccount string, audiences []string, ttl time.Duration) (string, error) {
	tok, _, err := c.token(ctx, namespace, serviceAccount, audiences, ttl)
	return tok, err
}

func (c *Cluster) token(ctx context.Context, namespace, serviceAccount string, audiences []string, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = configTokenTTL
	}
	if err := c.ensureServiceAccount(ctx, namespace, serviceAccount); err != nil {
		return "", time.Time{}, err
	}
	tr, err := c.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: ptr.To(int64(ttl / time.Second)),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("requesting a token for %s/%s in cluster %q: %w", namespace, serviceAccount, c.Name, err)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}

// ConfigFor returns a rest.Config that authenticates as the ServiceAccount with
// a real token from the TokenRequest API (creating the namespace and
// ServiceAccount if missing), so RBAC is really exercised. The token is
// re-minted before it expires, so the config can be used for as long as the
// cluster runs. With audiences set, the apiserver only accepts the token if
// they include one of its --api-audiences.
func (c *Cluster) ConfigFor(ctx context.Context, namespace, serviceAccount string, audiences ...string) (*rest.Config, error) {
	// Mint one now so that a failure shows up here rather than on first use.
	tok, exp, err := c.token(ctx, namespace, serviceAccount, audiences, configTokenTTL)
	if err != nil {
		return nil, err
	}
	src := &tokenSource{c: c, namespace: namespace, serviceAccount: serviceAccount, audiences: audiences, first: newOAuthToken(tok, exp)}
	// The caching source renews on expiry, after a 401, and keeps the old
	// token while minting fails.
	cached := transport.NewCachedTokenSource(src)

	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	cfg.UserAgent = fmt.Sprintf("localcluster/%s/%s", namespace, serviceAccount)
	cfg.WrapTransport = transport.TokenSourceWrapTransport(cached)
	return cfg, nil
}

// tokenSource mints a fresh token when the cached one is about to expire.
type tokenSource struct {
	c                         *Cluster
	namespace, serviceAccount string
	audiences                 []string

	mu    sync.Mutex
	first *oauth2.Token // minted by ConfigFor, handed out once
}

func (s *tokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	first := s.first
	s.first = nil
	s.mu.Unlock()
	if first != nil {
		return first, nil
	}
	// oauth2.TokenSource has no context; bound the call instead.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, exp, err := s.c.token(ctx, s.namespace, s.serviceAccount, s.audiences, configTokenTTL)
	if err != nil {
		return nil, err
	}
	return newOAuthToken(tok, exp), nil
}

func newOAuthToken(tok string, exp time.Time) *oauth2.Token {
	// Renew well before expiry so a request never carries a token that
	// expires in flight.
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer", Expiry: exp.Add(-configTokenTTL / 5)}
}

func (c *Cluster) ensureServiceAccount(ctx context.Context, namespace, name string) error {
	cs := c.Clientset.CoreV1()
	if _, err := cs.ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("getting ServiceAccount %s/%s in cluster %q: %w", namespace, name, c.Name, err)
	}
	if err := c.ensureNamespace(ctx, namespace); err != nil {
		return err
	}
	_, err := cs.ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ServiceAccount %s/%s in cluster %q: %w", namespace, name, c.Name, err)
	}
	return nil
}

func (c *Cluster) ensureNamespace(ctx context.Context, name string) error {
	_, err := c.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s in cluster %q: %w", name, c.Name, err)
	}
	return nil
}
