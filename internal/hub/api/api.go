package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1 "github.com/anchorage-dev/anchorage/pkg/apis/hub/v1alpha1"
	"github.com/anchorage-dev/anchorage/pkg/federation"
	"github.com/anchorage-dev/anchorage/pkg/oidcbundle"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Join token Secrets, one per MemberCluster not yet joined.
const (
	TokenKey            = "token"
	ExpiresAtAnnotation = "hub.anchorage.dev/expires-at"
	ClusterLabel        = "hub.anchorage.dev/cluster"
	FieldManager        = "anchorage-hub"
	maxAnchorsPerSigner = 16
	maxCAs              = 64
	bearerPrefix        = "Bearer "
)

// JoinTokenSecretName is the Secret holding cluster's join token.
func JoinTokenSecretName(cluster string) string { return "join-" + cluster }

// Handler serves the agent API.
type Handler struct {
	// Client reads MemberClusters from the informer cache and writes status.
	Client client.Client
	// APIReader reads join token Secrets live: a token is single-use, a
	// cached copy could still show one already spent.
	APIReader client.Reader
	// Store verifies agent tokens against each member's issuer and JWKS.
	Store *oidcbundle.Store
	// Namespace holds the join token Secrets.
	Namespace    string
	Clock        clock.PassiveClock
	Log          logr.Logger
	MaxBodyBytes int64
	// Sets answers bundle long polls.
	Sets BundleSets
	// PollTimeout is how long a bundles call waits before 204.
	PollTimeout time.Duration
	// Writes bounds the status writes in flight (nil: unbounded). After a
	// change a thousand members ack at once; beyond a few dozen, more
	// writes in flight only queue in the apiserver and cost the hub a
	// connection and buffers each.
	Writes chan struct{}
}

// acquire takes a write slot, or fails when ctx ends first.
func (h *Handler) acquire(ctx context.Context) (release func(), err error) {
	if h.Writes == nil {
		return func() {}, nil
	}
	select {
	case h.Writes <- struct{}{}:
		return func() { <-h.Writes }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// BundleSets hands out members' bundle sets as they change.
type BundleSets interface {
	// Next returns member's set (JSON) once its sequence differs from
	// after, or nil after timeout or when the replica shuts down.
	Next(ctx context.Context, member string, after int64, timeout time.Duration) []byte
	// Published is the sequence of member's set as this replica serves
	// it, 0 before it serves one.
	Published(member string) int64
}

// errAlreadyJoined aborts a join whose member joined meanwhile: not a
// conflict, so that it is never retried into a second write.
var errAlreadyJoined = errors.New("already joined")

// Routes mounts the agent API on r.
func (h *Handler) Routes(r chi.Router) {
	r.Route(federation.APIPrefix+"{cluster}", func(r chi.Router) {
		r.Post("/"+federation.JoinPath, h.join)
		r.Put("/"+federation.ReportPath, h.report)
		r.Get("/"+federation.BundlesPath, h.bundles)
		r.Post("/"+federation.AckPath, h.ack)
		r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
			federation.WriteError(w, http.StatusNotFound, "no such agent API call; the calls are POST join, PUT report, GET bundles and POST ack")
		})
		r.MethodNotAllowed(MethodNotAllowed("method not allowed: join is POST, report is PUT, bundles is GET, ack is POST"))
	})
}

// join: the token must be the one in the cluster's join Secret and not
// expired; the JWKS must parse and hold a key. The member's status gets
// the JWKS and Joined=True, then the Secret is deleted (single use). Once
// joined, every join is refused with 409; an agent whose answer was lost
// sees 409 and goes on to report.
func (h *Handler) join(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := chi.URLParam(r, "cluster")
	var req federation.JoinRequest
	if !h.decode(w, r, &req) {
		return
	}
	mc, ok := h.member(ctx, w, name)
	if !ok {
		return
	}
	_, jwks, err := parseJWKS(req.JWKS)
	if err != nil {
		federation.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	alreadyJoined := fmt.Sprintf("cluster %q has already joined; its keys rotate through authenticated reports", name)
	if meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined) {
		federation.WriteError(w, http.StatusConflict, alreadyJoined)
		return
	}
	var secret corev1.Secret
	err = h.APIReader.Get(ctx, client.ObjectKey{Namespace: h.Namespace, Name: JoinTokenSecretName(name)}, &secret)
	if apierrors.IsNotFound(err) {
		federation.WriteError(w, http.StatusUnauthorized, fmt.Sprintf("no join token is waiting for cluster %q: it was used, or the MemberCluster was just created; ask the hub operator for the token in Secret %s/%s", name, h.Namespace, JoinTokenSecretName(name)))
		return
	} else if err != nil {
		h.unavailable(w, "reading the join token", err)
		return
	}
	if subtle.ConstantTimeCompare(secret.Data[TokenKey], []byte(req.Token)) != 1 || req.Token == "" {
		federation.WriteError(w, http.StatusUnauthorized, "wrong join token")
		return
	}
	if exp, err := time.Parse(time.RFC3339, secret.Annotations[ExpiresAtAnnotation]); err != nil || !h.Clock.Now().Before(exp) {
		federation.WriteError(w, http.StatusUnauthorized, fmt.Sprintf("the join token of cluster %q expired; delete Secret %s/%s and the hub makes a new one", name, h.Namespace, secret.Name))
		return
	}
	// The cache above may be behind, and concurrent joins (on this or
	// another replica) all see the token: the check on the live object,
	// written with its resourceVersion, lets exactly one of them record
	// its JWKS.
	err = h.updateStatus(ctx, name, func(st *hubv1.MemberClusterStatus) error {
		if meta.IsStatusConditionTrue(st.Conditions, hubv1.ConditionJoined) {
			return errAlreadyJoined
		}
		st.JWKS = jwks
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: hubv1.ConditionJoined, Status: metav1.ConditionTrue, Reason: hubv1.ReasonJoined, Message: "the agent joined with its join token"})
		return nil
	})
	if errors.Is(err, errAlreadyJoined) {
		federation.WriteError(w, http.StatusConflict, alreadyJoined)
		return
	} else if err != nil {
		h.unavailable(w, "recording the join", err)
		return
	}
	// Spend the token. If this fails, Joined=True already refuses every
	// further join; the member status controller deletes the Secret of a
	// joined member later.
	if err := h.Client.Delete(ctx, &secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
		h.Log.Error(err, "deleting a spent join token", "cluster", name)
	}
	h.Log.Info("member joined", "cluster", name)
	writeJSON(w, http.StatusOK, map[string]string{"status": "joined"})
}

// report: authenticated with the agent's service-account token (go-oidc,
// audience = hub URL, issuer and keys of the member named in the path).
func (h *Handler) report(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := chi.URLParam(r, "cluster")
	var rep federation.Report
	mc, claims, ok := h.authenticated(w, r, name, &rep)
	if !ok {
		return
	}
	anchors, err := validateAnchors(rep.Anchors)
	if err != nil {
		federation.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	set, jwks, err := parseJWKS(rep.JWKS)
	if err != nil {
		federation.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := keepsSigningKey(mc.Status.JWKS, set, claims.KeyID); err != nil {
		federation.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	cas, err := validateCAs(rep.CAs)
	if err != nil {
		federation.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := metav1.NewTime(h.Clock.Now())
	if err := h.updateStatus(ctx, name, func(st *hubv1.MemberClusterStatus) error {
		if !slices.Equal(st.Anchors, anchors) {
			st.Anchors = anchors
			st.AnchorsSequence++
		}
		st.JWKS = jwks
		st.CertificateAuthorities = cas
		st.AgentVersion = rep.AgentVersion
		// Ready is the status controller's: it weighs the report lease and
		// the applied bundle set together.
		st.LastReportTime = &now
		return nil
	}); err != nil {
		h.unavailable(w, "recording the report", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// authenticated checks the caller is the agent of the joined member name
// (go-oidc: audience = hub URL, issuer and keys of that member, subject =
// its agent ServiceAccount), after decoding the body into body when not
// nil, and returns the member as cached and the token's verified claims.
// It answers the error itself.
func (h *Handler) authenticated(w http.ResponseWriter, r *http.Request, name string, body any) (*hubv1.MemberCluster, *oidcbundle.AgentClaims, bool) {
	ctx := r.Context()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), bearerPrefix)
	if !ok || token == "" {
		federation.WriteError(w, http.StatusUnauthorized, "missing Authorization: Bearer <service-account token with the hub URL as audience>")
		return nil, nil, false
	}
	if body != nil && !h.decode(w, r, body) {
		return nil, nil, false
	}
	mc, ok := h.member(ctx, w, name)
	if !ok {
		return nil, nil, false
	}
	if !meta.IsStatusConditionTrue(mc.Status.Conditions, hubv1.ConditionJoined) {
		federation.WriteError(w, http.StatusForbidden, fmt.Sprintf("cluster %q has not joined yet: join with its join token first", name))
		return nil, nil, false
	}
	claims, err := h.Store.VerifyAgentToken(ctx, name, token)
	if err != nil {
		status := http.StatusUnauthorized
		if errors.Is(err, oidcbundle.ErrUnknownCluster) {
			// Joined in the API but not yet in this replica's documents.
			status = http.StatusServiceUnavailable
		}
		federation.WriteError(w, status, err.Error())
		return nil, nil, false
	}
	return mc, claims, true
}

// bundles is the long poll: the member's bundle set as soon as its
// sequence differs from ?after, or 204 after PollTimeout (at once while
// the replica shuts down, so that the agent polls another). Served from
// this replica's memory; it never touches the API.
func (h *Handler) bundles(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "cluster")
	after := int64(0)
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			federation.WriteError(w, http.StatusBadRequest, fmt.Sprintf("after=%q: want the sequence of the set last applied, a number >= 0", v))
			return
		}
		after = n
	}
	if _, _, ok := h.authenticated(w, r, name, nil); !ok {
		return
	}
	body := h.Sets.Next(r.Context(), name, after, h.PollTimeout)
	if body == nil {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

// ack records that the agent applied a bundle set. Acks arrive in order
// from one agent, but a late retry must not move the record back. A merge
// patch of the two fields, without a read: after a change every member
// acks at once, and the apiserver's time is the fan-out's.
func (h *Handler) ack(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := chi.URLParam(r, "cluster")
	var a federation.Ack
	mc, _, ok := h.authenticated(w, r, name, &a)
	if !ok {
		return
	}
	if a.Sequence <= 0 {
		federation.WriteError(w, http.StatusBadRequest, "sequence must be the positive sequence of the applied bundle set")
		return
	}
	// Nothing above what is published can have been applied; bounding it
	// also keeps the sequences derived from acks from overflowing. 409, not
	// 400: a replica whose cache is behind the one that answered the poll
	// refuses a good ack until it catches up, and the agent retries.
	if published := h.Sets.Published(name); a.Sequence > published {
		federation.WriteError(w, http.StatusConflict, fmt.Sprintf("sequence %d is above %d, the sequence of the bundle set this hub replica publishes for cluster %q: ack the sequence of a set the hub sent (a replica behind the others catches up within seconds; retry)", a.Sequence, published, name))
		return
	}
	if raw, err := hex.DecodeString(a.BundlesDigest); err != nil || len(raw) != sha256.Size {
		federation.WriteError(w, http.StatusBadRequest, "bundlesDigest must be the 64 hex digits of federation.BundlesDigest over the applied bundles")
		return
	}
	st := mc.Status
	if a.Sequence < st.AppliedBundleSequence || a.Sequence == st.AppliedBundleSequence && a.BundlesDigest == st.AppliedBundleDigest {
		w.WriteHeader(http.StatusNoContent) // a late retry, or nothing new
		return
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"appliedBundleSequence": a.Sequence, "appliedBundleDigest": a.BundlesDigest}})
	if err != nil {
		h.unavailable(w, "recording the ack", err)
		return
	}
	release, err := h.acquire(ctx)
	if err != nil {
		h.unavailable(w, "recording the ack", err)
		return
	}
	defer release()
	if err := h.Client.Status().Patch(ctx, mc, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldManager)); err != nil {
		h.unavailable(w, "recording the ack", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// member returns the MemberCluster of the path, or answers 404.
func (h *Handler) member(ctx context.Context, w http.ResponseWriter, name string) (*hubv1.MemberCluster, bool) {
	if hubv1.ValidateClusterName(name) != nil {
		federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("%q is not a cluster name", name))
		return nil, false
	}
	var mc hubv1.MemberCluster
	if err := h.Client.Get(ctx, client.ObjectKey{Name: name}, &mc); apierrors.IsNotFound(err) {
		federation.WriteError(w, http.StatusNotFound, fmt.Sprintf("cluster %q is not a member of this hub: create its MemberCluster first", name))
		return nil, false
	} else if err != nil {
		h.unavailable(w, "reading the MemberCluster", err)
		return nil, false
	}
	return &mc, true
}

// updateStatus applies change to the member's latest status, retrying
// conflicts, and writes nothing when nothing changed. An error from change
// aborts the update and is returned as it is.
func (h *Handler) updateStatus(ctx context.Context, name string, change func(*hubv1.MemberClusterStatus) error) error {
	release, err := h.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var mc hubv1.MemberCluster
		if err := h.APIReader.Get(ctx, client.ObjectKey{Name: name}, &mc); err != nil {
			return err
		}
		before := mc.Status.DeepCopy()
		if err := change(&mc.Status); err != nil {
			return err
		}
		mc.Status.ObservedGeneration = mc.Generation
		if equalStatus(before, &mc.Status) {
			return nil
		}
		return h.Client.Status().Update(ctx, &mc, client.FieldOwner(FieldManager))
	})
}

func equalStatus(a, b *hubv1.MemberClusterStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// decode reads a size-limited JSON body with no unknown fields.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, into any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		federation.WriteError(w, http.StatusUnsupportedMediaType, "the body must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			federation.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", h.MaxBodyBytes))
			return false
		}
		federation.WriteError(w, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func (h *Handler) unavailable(w http.ResponseWriter, what string, err error) {
	h.Log.Error(err, what)
	federation.WriteError(w, http.StatusServiceUnavailable, what+" failed on the hub; retry")
}

// parseJWKS validates a member's JWKS and returns it with its canonical
// form. An empty set is refused: the hub could verify none of the agent's
// tokens, and the member would be locked out for good.
func parseJWKS(raw json.RawMessage) (*jose.JSONWebKeySet, string, error) {
	if len(raw) == 0 {
		return nil, "", errors.New("jwks is required: the cluster's /openid/v1/jwks")
	}
	set, err := oidcbundle.ParseJWKS(raw)
	if err != nil {
		return nil, "", fmt.Errorf("jwks: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, "", errors.New("jwks has no keys: send the cluster's /openid/v1/jwks; with an empty set the hub could verify none of the agent's tokens")
	}
	out, err := json.Marshal(set)
	if err != nil {
		return nil, "", err
	}
	return set, string(out), nil
}

// keepsSigningKey checks that a reported JWKS still holds the key, as
// stored, that verified the request's token (kid; every stored key for a
// token without kid): keys then change only through a key the hub has
// seen sign, and the agent cannot lock itself out.
func keepsSigningKey(stored string, reported *jose.JSONWebKeySet, kid string) error {
	current, err := oidcbundle.ParseJWKS([]byte(stored))
	if err != nil {
		return fmt.Errorf("the member's stored JWKS does not parse: %w", err)
	}
	keep := current.Keys
	if kid != "" {
		keep = current.Key(kid)
	}
	if kid != "" && len(keep) == 0 {
		return missingKeyError(kid)
	}
	for _, k := range keep {
		if !slices.ContainsFunc(reported.Key(k.KeyID), func(r jose.JSONWebKey) bool { return sameKey(k, r) }) {
			return missingKeyError(k.KeyID)
		}
	}
	return nil
}

func missingKeyError(kid string) error {
	return fmt.Errorf("the reported JWKS must keep key %q that signed the token: rotate the service-account keys with an overlap (keep the old public key in --service-account-key-file until the hub has the new JWKS), or re-join the member (re-create its MemberCluster)", kid)
}

func sameKey(a, b jose.JSONWebKey) bool {
	ta, err := a.Thumbprint(crypto.SHA256)
	if err != nil {
		return false
	}
	tb, err := b.Thumbprint(crypto.SHA256)
	return err == nil && bytes.Equal(ta, tb)
}

// validateAnchors checks every signer's PEM is CA certificates only, and
// returns them in the status's stable order.
func validateAnchors(in map[string]string) ([]hubv1.SignerAnchors, error) {
	out := make([]hubv1.SignerAnchors, 0, len(in))
	for _, signer := range slices.Sorted(maps.Keys(in)) {
		if !slices.Contains(signers.SignerNames(), signer) {
			return nil, fmt.Errorf("anchors: unknown signer %q (known: %s)", signer, strings.Join(signers.SignerNames(), ", "))
		}
		certs, err := signers.ParseCertificatesPEM([]byte(in[signer]))
		if err != nil {
			return nil, fmt.Errorf("anchors of %s: %w", signer, err)
		}
		if len(certs) > maxAnchorsPerSigner {
			return nil, fmt.Errorf("anchors of %s: %d certificates, at most %d", signer, len(certs), maxAnchorsPerSigner)
		}
		for _, c := range certs {
			if !c.IsCA || !c.BasicConstraintsValid {
				return nil, fmt.Errorf("anchors of %s: %q is not a CA certificate", signer, c.Subject)
			}
		}
		out = append(out, hubv1.SignerAnchors{Signer: signer, PEM: string(signers.EncodeCertificatesPEM(certs))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Signer < out[j].Signer })
	return out, nil
}

// validateCAs checks the reported CA states.
func validateCAs(in []federation.CAStatus) ([]hubv1.CertificateAuthority, error) {
	if len(in) > maxCAs {
		return nil, fmt.Errorf("cas: %d entries, at most %d", len(in), maxCAs)
	}
	out := make([]hubv1.CertificateAuthority, 0, len(in))
	for i, c := range in {
		if !slices.Contains(signers.SignerNames(), c.Signer) {
			return nil, fmt.Errorf("cas[%d]: unknown signer %q", i, c.Signer)
		}
		if raw, err := hex.DecodeString(c.SubjectKeyID); err != nil || len(raw) == 0 || len(raw) > 64 {
			return nil, fmt.Errorf("cas[%d]: subjectKeyID must be the key id in hex", i)
		}
		switch signers.CAState(c.State) {
		case signers.StateNext, signers.StateActive, signers.StateRetired:
		default:
			return nil, fmt.Errorf("cas[%d]: state %q is not next, active or retired", i, c.State)
		}
		ca := hubv1.CertificateAuthority{Signer: c.Signer, SubjectKeyID: strings.ToLower(c.SubjectKeyID), State: c.State}
		if !c.NotAfter.IsZero() {
			t := metav1.NewTime(c.NotAfter.UTC())
			ca.NotAfter = &t
		}
		out = append(out, ca)
	}
	return out, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // messages are read by people: keep "<" as is
	_ = enc.Encode(v)
}
