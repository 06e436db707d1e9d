package kubeletsim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// KubeletVersion is what the simulated node reports.
const KubeletVersion = "v1.37.1-kubeletsim"

// Kubelet constants (podcertificatemanager.go) the simulator keeps.
const (
	// maxRefreshJitter is added to beginRefreshAt so that pods do not
	// refresh in lockstep (jitterDuration).
	maxRefreshJitter = 5 * time.Minute
	// defaultAbandonAfter: a request not seen by the informer this long
	// after creation is assumed deleted and made again (assumeDeletedThreshold).
	defaultAbandonAfter = 10 * time.Minute
	// refreshOverdue: after beginRefreshAt plus this, the kubelet emits
	// CertificateOverdueForRefresh (refreshOverdueDuration).
	refreshOverdue = 10 * time.Minute
)

// Defaults of Options.TrustBundleRefreshDelay and TrustBundleRefreshJitter:
// the kubelet's lag (up to its pod resync, 1 minute plus up to 50%)
// compressed so that tests stay fast but never see bundles at once.
const (
	defaultTrustBundleRefreshDelay  = time.Second
	defaultTrustBundleRefreshJitter = 0.5
)

// Options configures a simulated kubelet.
type Options struct {
	// NodeName is the Node this kubelet runs as (required). The Node is
	// created by Start if missing.
	NodeName string
	// Dir is the kubelet root (required): volumes are projected under
	// <Dir>/pods/<pod UID>/volumes/kubernetes.io~projected/<volume>, as under
	// /var/lib/kubelet.
	Dir string
	// NodeIP is the node's InternalIP and every pod's hostIP; default 127.0.0.1.
	NodeIP string
	// PodCIDR is where pod IPs come from; default a /16 in 10.0.0.0/8 derived
	// from the node name, so several simulated nodes rarely collide.
	PodCIDR netip.Prefix
	// Clock stamps files and decides when a refresh is due. The simulator
	// wakes up on real timers, so with a fake clock use Refresh to move on.
	Clock clock.PassiveClock
	// RefreshAfter says how long after seeing a request Issued the kubelet
	// starts refreshing it (new key, new request). nil = like the kubelet:
	// until status.beginRefreshAt plus up to 5 minutes of jitter. Use
	// TimeScale or a constant to compress time in tests.
	RefreshAfter func(issued *certsv1.PodCertificateRequest) time.Duration
	// AbandonAfter is how long a created request may stay invisible before it
	// is assumed deleted and re-created; 0 = 10 minutes plus jitter.
	AbandonAfter time.Duration
	// Workers processing pods in parallel; 0 = 8. (The kubelet uses one.)
	Workers int
	// ResyncPeriod is how often every pod is looked at again even without
	// events, like the kubelet's refresh pass and volume remounts; 0 = 1
	// minute (jittered up to twice that, as the kubelet does).
	ResyncPeriod time.Duration
	// TrustBundleRefreshDelay is the least time between a ClusterTrustBundle
	// change and the rewrite of the pods' clusterTrustBundle files; each pod
	// waits TrustBundleRefreshDelay times 1 to 1+TrustBundleRefreshJitter.
	// 0 = 1 s (a compressed kubelet, see onTrustBundle); negative = at once.
	// Anything that publishes a bundle and then relies on pods having it (a
	// CA promotion) must wait longer than the lag.
	TrustBundleRefreshDelay time.Duration
	// TrustBundleRefreshJitter is the fraction of TrustBundleRefreshDelay
	// added at random per pod; 0 = 0.5 (the kubelet's pod resync jitter);
	// negative = none.
	TrustBundleRefreshJitter float64
	// Log is the logger; the zero value means the one in Start's context.
	Log logr.Logger
	// NodeConfig is the kubelet's own identity (e.g. localcluster's
	// Cluster.NodeConfig, with Options.NodeAuthorization) for everything the
	// kubelet does: registering the Node, its informers, requests, tokens,
	// pod status, events. The node authorizer and NodeRestriction then apply
	// as on a real node. nil = the config given to New. The config given to
	// New is always used for what is not the kubelet's job: creating
	// namespaces, ServiceAccounts and Pods in RunPod, deleting in DeletePod,
	// and WaitTerminal.
	NodeConfig *rest.Config
}

// TimeScale returns a RefreshAfter that compresses the wait for
// beginRefreshAt by factor (e.g. 1.0/3600 turns the 12 h of a 24 h certificate
// into 12 s). It measures from the wall clock, as the request's times are.
func TimeScale(factor float64) func(*certsv1.PodCertificateRequest) time.Duration {
	return func(pcr *certsv1.PodCertificateRequest) time.Duration {
		if pcr.Status.BeginRefreshAt == nil {
			return 0
		}
		return time.Duration(float64(time.Until(pcr.Status.BeginRefreshAt.Time)) * factor)
	}
}

// Sim is a simulated kubelet for one Node: it runs pods' projected
// podCertificate, clusterTrustBundle and serviceAccountToken volume sources
// against a real apiserver, and writes their files the way the kubelet does.
type Sim struct {
	opts Options
	// cs is the kubelet's own client (Options.NodeConfig); admin does what
	// other components would (creating pods, namespaces, ServiceAccounts).
	cs    kubernetes.Interface
	admin kubernetes.Interface
	clock clock.PassiveClock
	log   logr.Logger

	podCIDR netip.Prefix

	queue workqueue.TypedRateLimitingInterface[types.UID]

	pcrInformer cache.SharedIndexInformer
	pcrLister   certlisters.PodCertificateRequestLister
	ctbInformer cache.SharedIndexInformer
	ctbLister   certlisters.ClusterTrustBundleLister

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	mu     sync.Mutex
	node   *corev1.Node
	pods   map[types.UID]*Pod
	byName map[types.NamespacedName]*Pod
	// gone holds pods this kubelet tore down whose Delete event has not
	// arrived yet, so that a late Update event cannot bring them back.
	gone    map[types.UID]bool
	nextIP  uint32
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New creates a simulator; nothing talks to the apiserver until Start. The
// client's rate limit is raised (QPS 2000, burst 4000) so that a thousand pods
// are limited by the apiserver, not by client-go's default 5 QPS.
func New(cfg *rest.Config, opts Options) (*Sim, error) {
	if opts.NodeName == "" {
		return nil, errors.New("kubeletsim: Options.NodeName is required")
	}
	if opts.Dir == "" {
		return nil, errors.New("kubeletsim: Options.Dir is required (the folder volumes are projected under)")
	}
	if opts.NodeIP == "" {
		opts.NodeIP = "127.0.0.1"
	}
	if _, err := netip.ParseAddr(opts.NodeIP); err != nil {
		return nil, fmt.Errorf("kubeletsim: Options.NodeIP: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.ResyncPeriod <= 0 {
		opts.ResyncPeriod = time.Minute
	}
	if opts.TrustBundleRefreshDelay == 0 {
		opts.TrustBundleRefreshDelay = defaultTrustBundleRefreshDelay
	}
	if opts.TrustBundleRefreshJitter == 0 {
		opts.TrustBundleRefreshJitter = defaultTrustBundleRefreshJitter
	}
	podCIDR := opts.PodCIDR
	if !podCIDR.IsValid() {
		h := fnv.New32a()
		_, _ = h.Write([]byte(opts.NodeName))
		v := h.Sum32()
		podCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + v%150), 0, 0}), 16)
	}
	if !podCIDR.Addr().Is4() || podCIDR.Bits() > 24 {
		return nil, fmt.Errorf("kubeletsim: Options.PodCIDR %s: want an IPv4 prefix of /24 or wider", podCIDR)
	}
	admin, err := newClientset(cfg, "kubeletsim/"+opts.NodeName+"/admin")
	if err != nil {
		return nil, err
	}
	cs := admin
	if opts.NodeConfig != nil {
		if cs, err = newClientset(opts.NodeConfig, "kubeletsim/"+opts.NodeName); err != nil {
			return nil, err
		}
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Sim{
		opts:    opts,
		cs:      cs,
		admin:   admin,
		clock:   clk,
		log:     opts.Log,
		podCIDR: podCIDR,
		pods:    map[types.UID]*Pod{},
		byName:  map[types.NamespacedName]*Pod{},
		gone:    map[types.UID]bool{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.UID](),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "kubeletsim-" + opts.NodeName},
		),
	}, nil
}

func newClientset(cfg *rest.Config, userAgent string) (kubernetes.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS < 2000 {
		cfg.QPS, cfg.Burst = 2000, 4000
	}
	cfg.UserAgent = userAgent
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeletsim: creating clientset: %w", err)
	}
	return cs, nil
}

// NodeName is the simulated node's name.
func (s *Sim) NodeName() string { return s.opts.NodeName }

// Clientset is the kubelet's own client (Options.NodeConfig, or New's config).
func (s *Sim) Clientset() kubernetes.Interface { return s.cs }

// Start ensures the Node exists and is Ready, starts the informers (this
// node's PodCertificateRequests and Pods, all ClusterTrustBundles), waits for
// them to sync and starts the workers. It returns then; the simulator runs
// until ctx ends or Stop is called.
func (s *Sim) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("kubeletsim: Start called twice")
	}
	s.started = true
	s.mu.Unlock()

	if s.log.GetSink() == nil {
		s.log = logr.FromContextOrDiscard(ctx)
	}
	s.log = s.log.WithValues("node", s.opts.NodeName)
	ctx, cancel := context.WithCancel(logr.NewContext(ctx, s.log))
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()

	if err := s.ensureNode(ctx); err != nil {
		cancel()
		return err
	}

	// The kubelet's informers: PodCertificateRequests and Pods of this node
	// only (field selector spec.nodeName, the only way the node authorizer
	// lets a kubelet list them), ClusterTrustBundles cluster-wide.
	onNode := fields.OneTermEqualSelector("spec.nodeName", s.opts.NodeName).String()
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(s.cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = onNode }))
	clusterFactory := informers.NewSharedInformerFactory(s.cs, 0)

	pcrs := nodeFactory.Certificates().V1().PodCertificateRequests()
	s.pcrInformer, s.pcrLister = pcrs.Informer(), pcrs.Lister()
	ctbs := clusterFactory.Certificates().V1().ClusterTrustBundles()
	s.ctbInformer, s.ctbLister = ctbs.Informer(), ctbs.Lister()
	podInformer := nodeFactory.Core().V1().Pods().Informer()

	if _, err := s.pcrInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.onRequest(obj) },
		UpdateFunc: func(_, obj any) { s.onRequest(obj) },
		DeleteFunc: func(obj any) { s.onRequest(obj) },
	}); err != nil {
		cancel()
		return fmt.Errorf("kubeletsim: watching PodCertificateRequests: %w", err)
	}
	if _, err := s.ctbInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.onTrustBundle() },
		UpdateFunc: func(any, any) { s.onTrustBundle() },
		DeleteFunc: func(any) { s.onTrustBundle() },
	}); err != nil {
		cancel()
		return fmt.Errorf("kubeletsim: watching ClusterTrustBundles: %w", err)
	}
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.onPod(ctx, obj, false) },
		UpdateFunc: func(_, obj any) { s.onPod(ctx, obj, false) },
		DeleteFunc: func(obj any) { s.onPod(ctx, obj, true) },
	}); err != nil {
		cancel()
		return fmt.Errorf("kubeletsim: watching Pods: %w", err)
	}

	s.broadcaster = record.NewBroadcaster(record.WithContext(ctx))
	s.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.cs.CoreV1().Events("")})
	s.recorder = s.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: s.opts.NodeName})

	nodeFactory.Start(ctx.Done())
	clusterFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.pcrInformer.HasSynced, s.ctbInformer.HasSynced, podInformer.HasSynced) {
		cancel()
		nodeFactory.Shutdown()
		clusterFactory.Shutdown()
		s.broadcaster.Shutdown()
		return fmt.Errorf("kubeletsim: informers did not sync: %w", context.Cause(ctx))
	}

	for range s.opts.Workers {
		s.wg.Go(func() { wait.UntilWithContext(ctx, s.worker, time.Second) })
	}
	s.wg.Go(func() {
		wait.JitterUntilWithContext(ctx, func(context.Context) { s.enqueueAll() }, s.opts.ResyncPeriod, 1.0, true)
	})
	s.wg.Go(func() {
		<-ctx.Done()
		s.queue.ShutDown()
		nodeFactory.Shutdown()
		clusterFactory.Shutdown()
		s.broadcaster.Shutdown()
	})
	s.log.V(1).Info("kubelet simulator started", "dir", s.opts.Dir, "podCIDR", s.podCIDR)
	return nil
}

// Stop stops the workers and informers and waits for them. Volume files stay.
func (s *Sim) Stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// ensureNode creates the Node if missing and reports it Ready, as a kubelet
// registering itself does.
func (s *Sim) ensureNode(ctx context.Context) error {
	nodes := s.cs.CoreV1().Nodes()
	node, err := nodes.Get(ctx, s.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err = nodes.Create(ctx, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: s.opts.NodeName,
				Labels: map[string]string{
					"kubernetes.io/hostname": s.opts.NodeName,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
				},
			},
			Spec: corev1.NodeSpec{PodCIDR: s.podCIDR.String(), PodCIDRs: []string{s.podCIDR.String()}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("kubeletsim: registering node %s: %w", s.opts.NodeName, err)
	}
	now := metav1.NewTime(s.clock.Now())
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet simulator is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
	}}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: s.opts.NodeIP},
		{Type: corev1.NodeHostName, Address: s.opts.NodeName},
	}
	node.Status.NodeInfo.KubeletVersion = KubeletVersion
	node.Status.NodeInfo.OperatingSystem = "linux"
	node.Status.NodeInfo.Architecture = "amd64"
	node, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("kubeletsim: posting status of node %s: %w", s.opts.NodeName, err)
	}
	s.mu.Lock()
	s.node = node
	s.mu.Unlock()
	return nil
}

func (s *Sim) currentNode() (*corev1.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return nil, errors.New("kubeletsim: not started (call Start first)")
	}
	return s.node, nil
}

// Node returns the simulated Node as registered by Start.
func (s *Sim) Node() *corev1.Node {
	n, _ := s.currentNode()
	return n
}

func (s *Sim) onRequest(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pcr, ok := obj.(*certsv1.PodCertificateRequest)
	if !ok {
		return
	}
	s.mu.Lock()
	_, tracked := s.pods[pcr.Spec.PodUID]
	s.mu.Unlock()
	if tracked {
		s.queue.Add(pcr.Spec.PodUID)
	}
}

func (s *Sim) enqueueAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid := range s.pods {
		s.queue.Add(uid)
	}
}

// onTrustBundle schedules the re-rendering of every pod with a
// clusterTrustBundle source after the refresh lag. The kubelet does not
// re-project on the event: its ClusterTrustBundle manager only drops cached
// anchors (pkg/kubelet/clustertrustbundle/clustertrustbundle_manager.go,
// newInformerManager's event handlers), and the files change when the pod is
// next synced and its projected volume remounted (RequiresRemount in
// pkg/volume/projected/projected.go; MarkRemountRequired in
// pkg/kubelet/volumemanager/populator/desired_state_of_world_populator.go),
// which the pod workers do every resync interval, 1 minute (--sync-frequency)
// jittered by up to 50% (workerResyncIntervalJitterFactor in
// pkg/kubelet/pod_workers.go): up to about 90 s after the change. Changes
// coalesce: a pod with a refresh pending picks them all up then.
func (s *Sim) onTrustBundle() {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid, p := range s.pods {
		if !p.hasTrustBundles {
			continue
		}
		d := s.trustBundleRefreshDelay()
		if p.bundleDue.CompareAndSwap(0, now.Add(d).UnixNano()) {
			s.queue.AddAfter(uid, d)
		}
	}
}

// trustBundleRefreshDelay is one pod's lag after a bundle change.
func (s *Sim) trustBundleRefreshDelay() time.Duration {
	d := max(s.opts.TrustBundleRefreshDelay, 0)
	// Not wait.Jitter: it turns a factor of 0 into 1.
	return d + time.Duration(rand.Float64()*max(s.opts.TrustBundleRefreshJitter, 0)*float64(d))
}

func (s *Sim) onPod(ctx context.Context, obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if deleted {
		s.forget(pod.UID)
		s.mu.Lock()
		delete(s.gone, pod.UID)
		s.mu.Unlock()
		return
	}
	if pod.DeletionTimestamp != nil {
		// A graceful delete by someone else: "stop the containers", tear
		// down the volumes and confirm, as the kubelet does.
		s.forget(pod.UID)
		if ptr.Deref(pod.DeletionGracePeriodSeconds, 0) == 0 {
			return // the apiserver removes it itself
		}
		err := s.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
			s.log.Error(err, "confirming pod deletion", "pod", klogRef(pod))
		}
		return
	}
	p, isNew := s.track(pod)
	if isNew {
		s.queue.Add(p.uid)
	} else {
		p.setObject(pod)
	}
}

// track starts tracking a pod bound to this node, or returns the existing
// record. A pod already torn down gets a record that is gone from the start.
func (s *Sim) track(pod *corev1.Pod) (*Pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pods[pod.UID]; ok {
		return p, false
	}
	if s.gone[pod.UID] {
		p := newPod(s, pod)
		p.gone = true
		p.status.Deleted = true
		return p, false
	}
	p := newPod(s, pod)
	s.pods[pod.UID] = p
	s.byName[types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}] = p
	return p, true
}

// forget stops tracking a pod and removes its volumes, as the kubelet does
// once a pod is gone.
func (s *Sim) forget(uid types.UID) {
	s.mu.Lock()
	p, ok := s.pods[uid]
	if ok {
		s.gone[uid] = true
		delete(s.pods, uid)
		key := types.NamespacedName{Namespace: p.namespace, Name: p.name}
		if s.byName[key] == p {
			delete(s.byName, key)
		}
	}
	s.mu.Unlock()
	if ok {
		p.teardown()
	}
}

func (s *Sim) lookup(uid types.UID) *Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods[uid]
}

// Pod returns the tracked pod, or nil.
func (s *Sim) Pod(namespace, name string) *Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byName[types.NamespacedName{Namespace: namespace, Name: name}]
}

// allocateIP hands out the next pod IP of the node's range.
func (s *Sim) allocateIP() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	size := uint32(1) << (32 - s.podCIDR.Bits())
	n := 2 + s.nextIP%(size-3) // skip the network address, .1 (gateway) and broadcast
	s.nextIP++
	b := s.podCIDR.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

func (s *Sim) worker(ctx context.Context) {
	for {
		uid, quit := s.queue.Get()
		if quit {
			return
		}
		func() {
			defer s.queue.Done(uid)
			p := s.lookup(uid)
			if p == nil {
				s.queue.Forget(uid)
				return
			}
			if err := p.sync(ctx, false); err != nil {
				if ctx.Err() == nil {
					p.log.Error(err, "syncing pod volumes; will retry")
				}
				s.queue.AddRateLimited(uid)
				return
			}
			s.queue.Forget(uid)
		}()
	}
}

// RunPod creates the pod's ServiceAccount (and namespace) if missing and the
// Pod bound to this node (spec.nodeName), then starts projecting its volumes:
// every podCertificate source gets a request, and clusterTrustBundle and
// serviceAccountToken sources are rendered. Once all of them can be written,
// the pod's status becomes Running with a pod IP (a real pod also stays in
// ContainerCreating until its volumes are set up). serviceAccountName
// defaults to "default", as the ServiceAccount admission plugin (disabled in
// envtest) would set it; a pod without containers gets one.
func (s *Sim) RunPod(ctx context.Context, pod *corev1.Pod) (*Pod, error) {
	if _, err := s.currentNode(); err != nil {
		return nil, err
	}
	pod = pod.DeepCopy()
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != s.opts.NodeName {
		return nil, fmt.Errorf("kubeletsim: pod %s/%s is bound to node %q, not %q", pod.Namespace, pod.Name, pod.Spec.NodeName, s.opts.NodeName)
	}
	pod.Spec.NodeName = s.opts.NodeName
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default"
	}
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "kubeletsim.invalid/app:latest"}}
	}
	if err := s.ensureServiceAccount(ctx, pod.Namespace, pod.Spec.ServiceAccountName); err != nil {
		return nil, err
	}
	created, err := s.admin.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubeletsim: creating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	p, _ := s.track(created)
	s.queue.Add(p.uid)
	return p, nil
}

func (s *Sim) ensureServiceAccount(ctx context.Context, namespace, name string) error {
	if _, err := s.admin.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubeletsim: getting ServiceAccount %s/%s: %w", namespace, name, err)
	}
	_, err := s.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubeletsim: creating namespace %s: %w", namespace, err)
	}
	_, err = s.admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubeletsim: creating ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return nil
}

// DeletePod deletes the pod at once (grace period 0, as the kubelet confirms a
// deletion once containers are gone) and removes its volume files. Its
// PodCertificateRequests stay: deleting them is the garbage collector's job
// (through the owner reference), and envtest runs no garbage collector.
func (s *Sim) DeletePod(ctx context.Context, namespace, name string) error {
	if p := s.Pod(namespace, name); p != nil {
		s.forget(p.uid)
	}
	err := s.admin.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubeletsim: deleting pod %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Refresh runs one refresh pass now: every issued podCertificate projection
// gets a new key and request at once (whatever its beginRefreshAt), and trust
// bundles and tokens are re-rendered. It returns when the new requests have
// been created; use Pod.WaitFor to see them issued and written.
func (s *Sim) Refresh(ctx context.Context) error {
	s.mu.Lock()
	pods := make([]*Pod, 0, len(s.pods))
	for _, p := range s.pods {
		pods = append(pods, p)
	}
	s.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.Workers)
	for _, p := range pods {
		g.Go(func() error { return p.sync(ctx, true) })
	}
	return g.Wait()
}

// jitter is the kubelet's 0-5 minute refresh jitter.
func jitter() time.Duration { return rand.N(maxRefreshJitter) }

func (s *Sim) abandonAfter() time.Duration {
	if s.opts.AbandonAfter > 0 {
		return s.opts.AbandonAfter
	}
	return defaultAbandonAfter + jitter()
}

func (s *Sim) refreshAfter(pcr *certsv1.PodCertificateRequest) time.Duration {
	if s.opts.RefreshAfter != nil {
		return s.opts.RefreshAfter(pcr)
	}
	return pcr.Status.BeginRefreshAt.Time.Sub(s.clock.Now()) + jitter()
}

func (s *Sim) volumeDir(uid types.UID, volume string) string {
	return filepath.Join(s.opts.Dir, "pods", string(uid), "volumes", "kubernetes.io~projected", volume)
}

func klogRef(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }
