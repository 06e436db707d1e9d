package hubclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// JoinTokenKey is the data key of the join token Secret.
const JoinTokenKey = "token"

// callTimeout bounds a join or report call to the hub.
const callTimeout = 30 * time.Second

// PoolSource hands out a signer's current CA pool.
type PoolSource interface {
	Pool(signer string) (*signers.Pool, error)
}

// Reporter joins and reports. It runs on the leader only.
type Reporter struct {
	Hub *federation.Client
	// Reader reads the join token Secret.
	Reader client.Reader
	// JoinSecret names the Secret holding the join token.
	JoinSecret client.ObjectKey
	// REST reaches the cluster's own apiserver, for /openid/v1/jwks.
	REST     rest.Interface
	Pools    PoolSource
	Interval time.Duration
	// Changes, when set, triggers a report at once: a new anchor reaches
	// the hub without waiting for the interval.
	Changes <-chan event.GenericEvent
	Version string
	Log     logr.Logger
	// Reported is called after every successful report (tests, metrics).
	Reported func()
}

// NeedLeaderElection: one replica speaks for the cluster.
func (r *Reporter) NeedLeaderElection() bool { return true }

// Start reports every Interval until ctx ends; failures back off (with
// jitter, capped at Interval) and are logged, never fatal.
func (r *Reporter) Start(ctx context.Context) error {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: r.Interval}
	for {
		next := r.Interval
		if err := r.once(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			next = backoff.Step()
			r.Log.Error(err, "reporting to the hub failed; signing is unaffected, retrying", "in", next.Round(time.Millisecond))
		} else {
			backoff.Duration, backoff.Steps = time.Second, 1<<30 // healthy again
			if r.Reported != nil {
				r.Reported()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		case <-r.Changes: // nil: never
		}
	}
}

// once sends one report, joining first when the hub says the cluster has
// not joined.
func (r *Reporter) once(ctx context.Context) error {
	jwks, err := r.REST.Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("reading this cluster's /openid/v1/jwks: %w", err)
	}
	rep := federation.Report{Anchors: map[string]string{}, JWKS: json.RawMessage(jwks), AgentVersion: r.Version}
	for _, s := range signers.SignerNames() {
		pool, err := r.Pools.Pool(s)
		if err != nil {
			return fmt.Errorf("the %s CA pool: %w", s, err)
		}
		rep.Anchors[s] = string(signers.EncodeCertificatesPEM(pool.Anchors(time.Now())))
		for _, ca := range pool.CAs {
			rep.CAs = append(rep.CAs, federation.CAStatus{Signer: s, SubjectKeyID: ca.SKID(), State: string(ca.State), NotAfter: ca.Certificate.NotAfter})
		}
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err = r.Hub.Report(ctx, rep)
	if !federation.IsStatus(err, http.StatusForbidden) {
		return err
	}
	var secret corev1.Secret
	if err := r.Reader.Get(ctx, r.JoinSecret, &secret); err != nil {
		return fmt.Errorf("this cluster has not joined the hub, and its join token Secret %s cannot be read (copy the token from the hub's Secret anchorage-hub/join-<cluster>): %w", r.JoinSecret, err)
	}
	token := joinToken(&secret)
	if token == "" {
		return fmt.Errorf("this cluster has not joined the hub, and its join token Secret %s has no %q key: copy the token from the hub's Secret anchorage-hub/join-<cluster>", r.JoinSecret, JoinTokenKey)
	}
	// 409: joined already (an earlier answer was lost, or the hub's cache
	// lagged); the report below is the proof.
	if err := r.Hub.Join(ctx, federation.JoinRequest{Token: token, JWKS: json.RawMessage(jwks)}); err != nil && !federation.IsStatus(err, http.StatusConflict) {
		return fmt.Errorf("joining the hub: %w", err)
	}
	r.Log.Info("joined the hub", "hub", r.Hub.HubURL)
	return r.Hub.Report(ctx, rep)
}

// joinToken is the Secret's token without surrounding whitespace: a
// Secret made from a file (kubectl create secret --from-file) usually
// ends in a newline, which the hub would refuse as a wrong token.
func joinToken(secret *corev1.Secret) string {
	return strings.TrimSpace(string(secret.Data[JoinTokenKey]))
}

// PinnedTLS is the hub client's TLS config for --hub-ca-file: the
// certificates in caFile are the only roots trusted for the hub (a pin:
// the system roots are not consulted), and hubHost (the hub URL's host
// name or IP) must be in its certificate. The file is read at every
// handshake, so a rotated CA Secret is used without a restart; until the
// file is there, calls to the hub fail and are retried, and signing goes
// on.
func PinnedTLS(caFile, hubHost string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified by VerifyConnection, against the file as it is now: Go
		// has no client-side hook to swap RootCAs.
		InsecureSkipVerify: true, //nolint:gosec // see VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(caFile, hubHost, cs.PeerCertificates)
		},
	}
}

func verifyPinned(caFile, hubHost string, certs []*x509.Certificate) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("reading --hub-ca-file (create Secret anchorage-hub-ca with the hub's CA as ca.crt, or omit the flag to trust the system roots): %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("--hub-ca-file %s holds no PEM certificate", caFile)
	}
	if len(certs) == 0 {
		return errors.New("the hub presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: hubHost}); err != nil {
		return fmt.Errorf("the hub's certificate does not verify against --hub-ca-file %s (does the file hold the CA that signed it?): %w", caFile, err)
	}
	return nil
}
