package kubeletsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Pod is a pod this kubelet runs. Its methods are safe for concurrent use.
type Pod struct {
	sim             *Sim
	uid             types.UID
	namespace, name string
	log             logr.Logger
	// hasTrustBundles is fixed at creation: pod volumes are immutable.
	hasTrustBundles bool
	// bundleDue is when (Unix nanoseconds, 0: none pending) a bundle change
	// is due to be projected: set by Sim.onTrustBundle, claimed by sync.
	bundleDue atomic.Int64

	// procMu serializes sync and teardown; the fields below it are only
	// touched with it held.
	procMu  sync.Mutex
	gone    bool
	running bool
	volumes []*volume

	// mu guards what readers see.
	mu      sync.Mutex
	obj     *corev1.Pod
	status  Status
	changed chan struct{}
}

// volume is one projected volume with at least one source the simulator
// handles.
type volume struct {
	name    string
	dir     string
	mode    fs.FileMode
	sources []corev1.VolumeProjection
	certs   []*certState // podCertificate sources, in source order
	tokens  map[int]*tokenState
	// anchors holds the clusterTrustBundle files last rendered, by source
	// index: what the kubelet keeps projecting until the pod's next sync
	// after a bundle change (see Sim.onTrustBundle).
	anchors map[int][]byte

	written bool  // the last sync wrote (or confirmed) the files
	err     error // why the last sync could not
}

type certPhase int

// The kubelet's states (podcertificatemanager.go): initial → wait → fresh →
// waitRefresh → fresh …; wait and waitRefresh may end in denied or failed,
// which are permanent for the projection.
const (
	phaseInitial certPhase = iota
	phaseWait
	phaseFresh
	phaseWaitRefresh
	phaseDenied
	phaseFailed
)

type certState struct {
	volume string
	index  int
	src    corev1.PodCertificateProjection
	phase  certPhase

	// Credentials being served (fresh, waitRefresh).
	keyPEM, chainPEM []byte
	issued           *certsv1.PodCertificateRequest
	beginRefreshAt   time.Time
	notAfter         time.Time
	refreshAt        time.Time

	// The request in flight (wait, waitRefresh).
	pendingName   string
	pendingKeyPEM []byte
	abandonAt     time.Time

	latest *certsv1.PodCertificateRequest
	cond   *metav1.Condition // the Denied or Failed condition

	overdueEventSent, expiredEventSent bool
}

type tokenState struct {
	src   corev1.ServiceAccountTokenProjection
	token string
	exp   time.Time
	ttl   time.Duration
}

// Projection is the state of one podCertificate source.
type Projection struct {
	Volume      string
	SourceIndex int
	Source      corev1.PodCertificateProjection
	// Request is the latest request made for this source: pending, or as
	// it ended.
	Request *certsv1.PodCertificateRequest
	// Issued is the request whose certificate is being served (nil before
	// the first issuance and after Denied or Failed).
	Issued *certsv1.PodCertificateRequest
	// Condition is the Denied or Failed condition that ended this source.
	Condition *metav1.Condition
	// Written means the volume's files hold Issued's key and chain.
	Written bool
}

// VolumeStatus is the state of one projected volume.
type VolumeStatus struct {
	Name string
	Dir  string
	// Written means the last attempt wrote the files (or found them
	// current); Err says why it could not.
	Written bool
	Err     error
}

// Status is a snapshot of a pod's projected volumes.
type Status struct {
	Projections []Projection
	Volumes     []VolumeStatus
	// Running: the pod's status was set to Running (all volumes written once).
	Running bool
	// Deleted: the pod is gone from this node and its files removed.
	Deleted bool
}

func newPod(s *Sim, pod *corev1.Pod) *Pod {
	p := &Pod{
		sim:       s,
		uid:       pod.UID,
		namespace: pod.Namespace,
		name:      pod.Name,
		log:       s.log.WithValues("pod", klogRef(pod), "podUID", pod.UID),
		obj:       pod.DeepCopy(),
		changed:   make(chan struct{}),
		running:   pod.Status.Phase == corev1.PodRunning,
	}
	fsGroup := pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.FSGroup != nil
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		vol := &volume{
			name:    v.Name,
			dir:     s.volumeDir(pod.UID, v.Name),
			mode:    0o644, // the API's default for defaultMode
			sources: v.Projected.Sources,
			tokens:  map[int]*tokenState{},
			anchors: map[int][]byte{},
		}
		if v.Projected.DefaultMode != nil {
			vol.mode = fs.FileMode(*v.Projected.DefaultMode)
		}
		if fsGroup {
			// The kubelet writes 0600 and its ownership change adds group
			// read for the read-only volume (without chown here).
			vol.mode = 0o640
		}
		handled := false
		for i, src := range v.Projected.Sources {
			switch {
			case src.PodCertificate != nil:
				vol.certs = append(vol.certs, &certState{volume: v.Name, index: i, src: *src.PodCertificate})
				handled = true
			case src.ClusterTrustBundle != nil:
				p.hasTrustBundles = true
				handled = true
			case src.ServiceAccountToken != nil:
				vol.tokens[i] = &tokenState{src: *src.ServiceAccountToken}
				handled = true
			default:
				p.log.V(1).Info("skipping a projected source the simulator does not handle (secret, configMap, downwardAPI)", "volume", v.Name, "sourceIndex", i)
			}
		}
		if handled {
			p.volumes = append(p.volumes, vol)
		}
	}
	p.status = p.snapshot()
	return p
}

// UID is the pod's UID.
func (p *Pod) UID() types.UID { return p.uid }

// Object returns the latest pod object this kubelet has seen.
func (p *Pod) Object() *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.obj.DeepCopy()
}

func (p *Pod) setObject(pod *corev1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pod.ResourceVersion != p.obj.ResourceVersion {
		p.obj = pod.DeepCopy()
	}
}

// VolumeDir is where the named projected volume's files are, as a container
// would see them at its mount path.
func (p *Pod) VolumeDir(volume string) string { return p.sim.volumeDir(p.uid, volume) }

// Status returns a snapshot of the pod's projections and volumes.
func (p *Pod) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Requests returns the latest request of every podCertificate source that has
// one, in volume and source order.
func (p *Pod) Requests() []*certsv1.PodCertificateRequest {
	var out []*certsv1.PodCertificateRequest
	for _, pr := range p.Status().Projections {
		if pr.Request != nil {
			out = append(out, pr.Request)
		}
	}
	return out
}

// WaitFor waits until cond holds for the pod's status, re-checking on every
// change.
func (p *Pod) WaitFor(ctx context.Context, cond func(Status) bool) error {
	for {
		p.mu.Lock()
		st, ch := p.status, p.changed
		p.mu.Unlock()
		if cond(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for pod %s/%s: %w; %s", p.namespace, p.name, context.Cause(ctx), describe(st))
		}
	}
}

// WaitIssued waits until every podCertificate source is issued and every
// projected volume is written. A Denied or Failed request ends the wait with an
// error naming its condition (the kubelet never retries those).
func (p *Pod) WaitIssued(ctx context.Context) error {
	var terminal error
	err := p.WaitFor(ctx, func(st Status) bool {
		if st.Deleted {
			terminal = fmt.Errorf("pod %s/%s was deleted", p.namespace, p.name)
			return true
		}
		for _, pr := range st.Projections {
			if pr.Condition != nil {
				name := "?"
				if pr.Request != nil {
					name = pr.Request.Name
				}
				terminal = fmt.Errorf("pod %s/%s volume %s source %d: PodCertificateRequest %s/%s was %s: reason=%q message=%q",
					p.namespace, p.name, pr.Volume, pr.SourceIndex, p.namespace, name, strings.ToLower(pr.Condition.Type), pr.Condition.Reason, pr.Condition.Message)
				return true
			}
		}
		for _, pr := range st.Projections {
			if !pr.Written {
				return false
			}
		}
		for _, v := range st.Volumes {
			if !v.Written {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return terminal
}

// Refresh forces a refresh of this pod's issued podCertificate sources now
// (see Sim.Refresh).
func (p *Pod) Refresh(ctx context.Context) error { return p.sync(ctx, true) }

func describe(st Status) string {
	var parts []string
	for _, pr := range st.Projections {
		switch {
		case pr.Condition != nil:
			parts = append(parts, fmt.Sprintf("%s[%d] %s (%s)", pr.Volume, pr.SourceIndex, pr.Condition.Type, pr.Condition.Reason))
		case pr.Request == nil:
			parts = append(parts, fmt.Sprintf("%s[%d] no request yet", pr.Volume, pr.SourceIndex))
		case pr.Issued == nil || pr.Issued.Name != pr.Request.Name:
			parts = append(parts, fmt.Sprintf("%s[%d] request %s pending", pr.Volume, pr.SourceIndex, pr.Request.Name))
		case !pr.Written:
			parts = append(parts, fmt.Sprintf("%s[%d] issued, not written", pr.Volume, pr.SourceIndex))
		}
	}
	for _, v := range st.Volumes {
		if v.Err != nil {
			parts = append(parts, fmt.Sprintf("volume %s: %v", v.Name, v.Err))
		}
	}
	if len(parts) == 0 {
		return "state: all issued and written"
	}
	return "state: " + strings.Join(parts, "; ")
}

// sync is one pass over the pod, like one round of the kubelet's projection
// queue plus a volume remount: advance every podCertificate source, refresh
// tokens, write every volume that can be written, report Running once all
// were. API errors are returned (the caller retries with backoff); a volume
// that cannot be rendered yet (not issued, no matching bundle) is not an error,
// since a request or bundle event will bring the pod back.
func (p *Pod) sync(ctx context.Context, force bool) error {
	p.procMu.Lock()
	defer p.procMu.Unlock()
	if p.gone {
		return nil
	}
	s := p.sim
	pod := p.Object()
	var (
		errs []error
		wake time.Time
	)
	soonest := func(t time.Time) {
		if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	for _, v := range p.volumes {
		for _, c := range v.certs {
			w, err := p.stepCert(ctx, pod, c, force)
			soonest(w)
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %s source %d: %w", v.name, c.index, err))
			}
		}
		for i, t := range v.tokens {
			w, err := p.ensureToken(ctx, pod, t)
			soonest(w)
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %s source %d: %w", v.name, i, err))
			}
		}
	}

	now := s.clock.Now()
	freshBundles := p.claimBundleRefresh(now) || force
	if due := p.bundleDue.Load(); due != 0 {
		soonest(time.Unix(0, due))
	}
	allWritten := true
	for _, v := range p.volumes {
		payload, err := p.payload(v, freshBundles)
		if err != nil {
			v.written, v.err = false, err
			allWritten = false
			continue
		}
		changed, err := writeAtomic(v.dir, now, payload)
		if err != nil {
			v.written, v.err = false, fmt.Errorf("writing files: %w", err)
			allWritten = false
			errs = append(errs, fmt.Errorf("volume %s: %w", v.name, v.err))
			continue
		}
		v.written, v.err = true, nil
		if changed {
			p.log.V(1).Info("projected volume written", "volume", v.name, "dir", v.dir)
		}
	}
	if allWritten && !p.running {
		if err := p.reportRunning(ctx, pod); err != nil {
			errs = append(errs, err)
		} else {
			p.running = true
		}
	}
	if !wake.IsZero() && s.queue != nil {
		s.queue.AddAfter(p.uid, max(wake.Sub(s.clock.Now()), 0))
	}
	p.publish()
	return errors.Join(errs...)
}

// claimBundleRefresh says whether a pending bundle change is due, and if so
// takes it (before the lister is read, so that a later change schedules a
// refresh of its own).
func (p *Pod) claimBundleRefresh(now time.Time) bool {
	due := p.bundleDue.Load()
	if due == 0 || now.UnixNano() < due {
		return false
	}
	return p.bundleDue.CompareAndSwap(due, 0)
}

// stepCert advances one podCertificate source; it returns when it wants to be
// looked at again (zero: on the next request event).
func (p *Pod) stepCert(ctx context.Context, pod *corev1.Pod, c *certState, force bool) (time.Time, error) {
	s := p.sim
	now := s.clock.Now()
	log := p.log.WithValues("volume", c.volume, "sourceIndex", c.index)
	switch c.phase {
	case phaseInitial, phaseFresh:
		if c.phase == phaseFresh {
			if !force && now.Before(c.refreshAt) {
				return c.refreshAt, nil
			}
			p.refreshEvents(pod, c, now)
		}
		pcr, key, err := s.createRequest(ctx, pod, &c.src, nil)
		if err != nil {
			return time.Time{}, err
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return time.Time{}, err
		}
		c.pendingName, c.pendingKeyPEM, c.latest = pcr.Name, keyPEM, pcr
		c.abandonAt = pcr.CreationTimestamp.Add(s.abandonAfter())
		if c.phase == phaseInitial {
			c.phase = phaseWait
		} else {
			c.phase = phaseWaitRefresh
		}
		log.V(1).Info("PodCertificateRequest created", "request", pcr.Name, "signer", c.src.SignerName, "keyType", c.src.KeyType)
		return c.abandonAt, nil

	case phaseWait, phaseWaitRefresh:
		pcr, err := s.pcrLister.PodCertificateRequests(p.namespace).Get(c.pendingName)
		if apierrors.IsNotFound(err) {
			if now.Before(c.abandonAt) {
				return c.abandonAt, nil // informer lag, most likely
			}
			// Deleted before it was answered: start over with a new key.
			if c.phase == phaseWait {
				c.phase = phaseInitial
			} else {
				c.phase, c.refreshAt = phaseFresh, now
			}
			return time.Time{}, fmt.Errorf("PodCertificateRequest %s/%s appears to have been deleted", p.namespace, c.pendingName)
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("getting PodCertificateRequest %s/%s: %w", p.namespace, c.pendingName, err)
		}
		// A copy: the lister's object is shared, and callers get it via Status.
		pcr = pcr.DeepCopy()
		c.latest = pcr
		cond := TerminalCondition(pcr)
		if cond == nil {
			if c.phase == phaseWaitRefresh {
				p.refreshEvents(pod, c, now)
			}
			return c.abandonAt, nil
		}
		switch cond.Type {
		case certsv1.PodCertificateRequestConditionTypeIssued:
			c.keyPEM, c.chainPEM = c.pendingKeyPEM, cleanCertificateChain([]byte(pcr.Status.CertificateChain))
			c.issued = pcr
			c.beginRefreshAt = timeOf(pcr.Status.BeginRefreshAt)
			c.notAfter = timeOf(pcr.Status.NotAfter)
			c.refreshAt = now.Add(s.refreshAfter(pcr))
			c.overdueEventSent, c.expiredEventSent = false, false
			c.phase = phaseFresh
			c.pendingName, c.pendingKeyPEM = "", nil
			log.V(1).Info("PodCertificateRequest issued", "request", pcr.Name, "refreshAt", c.refreshAt)
			return c.refreshAt, nil
		default: // Denied or Failed: permanent, even for a refresh.
			c.cond = cond.DeepCopy()
			if cond.Type == certsv1.PodCertificateRequestConditionTypeDenied {
				c.phase = phaseDenied
			} else {
				c.phase = phaseFailed
			}
			c.keyPEM, c.chainPEM, c.issued = nil, nil, nil
			c.pendingName, c.pendingKeyPEM = "", nil
			verb := strings.ToLower(cond.Type)
			if verb == "denied" {
				verb = "was denied"
			}
			// The kubelet passes cond.Reason as the format string here
			// (a bug that garbles the message); the intended text is sent.
			s.recorder.Eventf(pod, corev1.EventTypeWarning, cond.Type, "PodCertificateRequest %s/%s %s, reason=%q, message=%q", p.namespace, pcr.Name, verb, cond.Reason, cond.Message)
			log.Info("PodCertificateRequest ended without a certificate; the kubelet does not retry", "request", pcr.Name, "condition", cond.Type, "reason", cond.Reason, "message", cond.Message)
			return time.Time{}, nil
		}
	}
	return time.Time{}, nil // denied, failed
}

// refreshEvents emits the kubelet's CertificateOverdueForRefresh and
// CertificateExpired warnings, once each per certificate.
func (p *Pod) refreshEvents(pod *corev1.Pod, c *certState, now time.Time) {
	if !c.overdueEventSent && now.After(c.beginRefreshAt.Add(refreshOverdue)) {
		p.sim.recorder.Eventf(pod, corev1.EventTypeWarning, "CertificateOverdueForRefresh", "PodCertificate refresh overdue")
		c.overdueEventSent = true
	}
	if !c.expiredEventSent && now.After(c.notAfter) {
		p.sim.recorder.Eventf(pod, corev1.EventTypeWarning, "CertificateExpired", "PodCertificate expired")
		c.expiredEventSent = true
	}
}

// ensureToken mints a bound service-account token when there is none or the
// current one is in its last 20% (or older than 24 h), as the kubelet's token
// manager does.
func (p *Pod) ensureToken(ctx context.Context, pod *corev1.Pod, t *tokenState) (time.Time, error) {
	now := p.sim.clock.Now()
	refreshAt := func() time.Time {
		at := t.exp.Add(-t.ttl / 5)
		if maxAge := t.exp.Add(-t.ttl).Add(24 * time.Hour); maxAge.Before(at) {
			at = maxAge
		}
		return at
	}
	if t.token != "" && now.Before(refreshAt()) {
		return refreshAt(), nil
	}
	exp := ptr.Deref(t.src.ExpirationSeconds, 3600)
	var auds []string
	if t.src.Audience != "" {
		auds = []string{t.src.Audience}
	}
	tr, err := p.sim.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         auds,
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("requesting a service account token for %s/%s: %w", pod.Namespace, pod.Spec.ServiceAccountName, err)
	}
	t.token, t.exp = tr.Status.Token, tr.Status.ExpirationTimestamp.Time
	t.ttl = time.Duration(ptr.Deref(tr.Spec.ExpirationSeconds, exp)) * time.Second
	return refreshAt(), nil
}

// payload renders a volume's files, or says why it cannot be written yet. Like
// the kubelet, a volume is all or nothing: one source that cannot be rendered
// keeps the previous files in place.
func (p *Pod) payload(v *volume, freshBundles bool) (map[string]fileProjection, error) {
	out := map[string]fileProjection{}
	var errs []error
	certs := map[int]*certState{}
	for _, c := range v.certs {
		certs[c.index] = c
	}
	for i, src := range v.sources {
		switch {
		case src.PodCertificate != nil:
			c := certs[i]
			switch c.phase {
			case phaseFresh, phaseWaitRefresh:
			case phaseDenied, phaseFailed:
				errs = append(errs, fmt.Errorf("PodCertificateRequest was permanently %s: reason=%q message=%q", strings.ToLower(c.cond.Type), c.cond.Reason, c.cond.Message))
				continue
			default:
				errs = append(errs, errors.New("credential bundle is not issued yet"))
				continue
			}
			pc := src.PodCertificate
			if pc.CredentialBundlePath != "" {
				bundle := slices.Concat(c.keyPEM, c.chainPEM)
				out[pc.CredentialBundlePath] = fileProjection{data: bundle, mode: v.mode}
			}
			if pc.KeyPath != "" {
				out[pc.KeyPath] = fileProjection{data: c.keyPEM, mode: v.mode}
			}
			if pc.CertificateChainPath != "" {
				out[pc.CertificateChainPath] = fileProjection{data: c.chainPEM, mode: v.mode}
			}
		case src.ClusterTrustBundle != nil:
			data, err := p.anchors(v, i, src.ClusterTrustBundle, freshBundles)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out[src.ClusterTrustBundle.Path] = fileProjection{data: data, mode: v.mode}
		case src.ServiceAccountToken != nil:
			t := v.tokens[i]
			if t.token == "" {
				errs = append(errs, errors.New("service account token not minted yet"))
				continue
			}
			out[src.ServiceAccountToken.Path] = fileProjection{data: []byte(t.token), mode: v.mode}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// anchors renders clusterTrustBundle source i of v: the files last rendered
// unless fresh, or the bundles now when there are none yet (a pod starting,
// or a failed render, which the kubelet retries on every sync).
func (p *Pod) anchors(v *volume, i int, src *corev1.ClusterTrustBundleProjection, fresh bool) ([]byte, error) {
	if data, ok := v.anchors[i]; ok && !fresh {
		return data, nil
	}
	data, err := p.sim.trustAnchors(src)
	if err != nil {
		delete(v.anchors, i)
		return nil, err
	}
	v.anchors[i] = data
	return data, nil
}

// reportRunning sets the pod's status to Running and Ready with a pod IP, as
// the kubelet's status manager would once the containers started.
func (p *Pod) reportRunning(ctx context.Context, pod *corev1.Pod) error {
	s := p.sim
	now := metav1.NewTime(s.clock.Now())
	podIP := pod.Status.PodIP
	if podIP == "" {
		podIP = s.allocateIP()
	}
	st := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    s.opts.NodeIP,
		HostIPs:   []corev1.HostIP{{IP: s.opts.NodeIP}},
		PodIP:     podIP,
		PodIPs:    []corev1.PodIP{{IP: podIP}},
		StartTime: &now,
		// qosClass is left out: the apiserver set it at creation and it is immutable.
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image,
			ContainerID: "kubeletsim://" + string(pod.UID) + "/" + c.Name,
			Ready:       true,
			Started:     ptr.To(true),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	patch, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return fmt.Errorf("encoding pod status: %w", err)
	}
	updated, err := s.cs.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("setting pod %s/%s Running: %w", pod.Namespace, pod.Name, err)
	}
	p.setObject(updated)
	p.log.V(1).Info("pod running", "podIP", podIP)
	return nil
}

// teardown stops the pod's work and removes its volumes, as the kubelet does
// when a pod leaves the node.
func (p *Pod) teardown() {
	p.procMu.Lock()
	defer p.procMu.Unlock()
	if p.gone {
		return
	}
	p.gone = true
	if err := os.RemoveAll(filepath.Join(p.sim.opts.Dir, "pods", string(p.uid))); err != nil {
		p.log.Error(err, "removing pod volumes")
	}
	p.publish()
}

// publish makes the current state visible to Status and wakes waiters.
func (p *Pod) publish() {
	st := p.snapshot()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = st
	close(p.changed)
	p.changed = make(chan struct{})
}

// snapshot copies the state; called with procMu held (or before the pod is shared).
func (p *Pod) snapshot() Status {
	st := Status{Running: p.running, Deleted: p.gone}
	for _, v := range p.volumes {
		st.Volumes = append(st.Volumes, VolumeStatus{Name: v.name, Dir: v.dir, Written: v.written, Err: v.err})
		for _, c := range v.certs {
			pr := Projection{Volume: v.name, SourceIndex: c.index, Source: c.src, Request: c.latest, Issued: c.issued, Condition: c.cond}
			pr.Written = c.issued != nil && v.written
			st.Projections = append(st.Projections, pr)
		}
	}
	return st
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}
