package profiles

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/anchorage-dev/anchorage/internal/agent/pcrsigner"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// ServicesAnnotation is the user annotation (PodCertificateProjection
// userAnnotations) with which a pod narrows its names to some Services.
const ServicesAnnotation = "service-dns.anchorage.dev/services"

// ReasonNoMatchingService: the pod has no Service (left after narrowing)
// yet; the request waits, then fails after the pending timeout.
const ReasonNoMatchingService = "NoMatchingService"

// SelectorIndex indexes Services by each key=value pair of their selector.
// A pod's candidate Services are the union over its own labels, so the
// lookup costs what the pod's labels match, not what the namespace holds.
const SelectorIndex = "anchorage.dev/service-selector-pair"

// IndexServiceSelector is the SelectorIndex extractor. Selector-less and
// ExternalName Services select no pod, so they are not indexed.
func IndexServiceSelector(obj client.Object) []string {
	svc, ok := obj.(*corev1.Service)
	if !ok || svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 {
		return nil
	}
	out := make([]string, 0, len(svc.Spec.Selector))
	for k, v := range svc.Spec.Selector {
		out = append(out, k+"="+v)
	}
	return out
}

// Clusterset says whether this cluster is an accepted clusterset member,
// which is what allows clusterset.local names.
type Clusterset interface {
	InClusterset() bool
}

// StaticClusterset is a fixed answer, for standalone installs and tests.
type StaticClusterset bool

// InClusterset implements Clusterset.
func (s StaticClusterset) InClusterset() bool { return bool(s) }

// ServiceDNS issues the DNS names of the Services that select the pod.
type ServiceDNS struct {
	// Reader is the manager's cache with SelectorIndex registered.
	Reader        client.Reader
	ClusterName   string
	ClusterDomain string
	Clusterset    Clusterset
	// RetryAfter re-checks a pending request in case a watch event was
	// missed; watches normally re-queue at once.
	RetryAfter time.Duration
}

var (
	_ pcrsigner.Profile = (*ServiceDNS)(nil)
	_ pcrsigner.Watcher = (*ServiceDNS)(nil)
)

// UserAnnotations implements pcrsigner.Profile.
func (p *ServiceDNS) UserAnnotations() []string { return []string{ServicesAnnotation} }

// Template implements pcrsigner.Profile.
func (p *ServiceDNS) Template(ctx context.Context, req *certsv1.PodCertificateRequest, pod *corev1.Pod) (*x509.Certificate, error) {
	names, err := p.Names(ctx, pod, req.Spec.UnverifiedUserAnnotations[ServicesAnnotation])
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		msg := fmt.Sprintf("no Service in namespace %s selects pod %s", pod.Namespace, pod.Name)
		if narrow := req.Spec.UnverifiedUserAnnotations[ServicesAnnotation]; narrow != "" {
			msg = fmt.Sprintf("none of the Services %s (annotation %s) selects pod %s/%s", pcrsigner.Quote(narrow), ServicesAnnotation, pod.Namespace, pod.Name)
		}
		return nil, &pcrsigner.Pending{Reason: ReasonNoMatchingService, Message: msg + "; the certificate is issued as soon as one does", RetryAfter: p.RetryAfter}
	}
	return signers.ServiceDNSLeaf(names)
}

// Names returns the DNS names pod gets, narrowed to the comma-separated
// Service names in narrow when it is set.
func (p *ServiceDNS) Names(ctx context.Context, pod *corev1.Pod, narrow string) ([]string, error) {
	svcs, err := p.matchingServices(ctx, pod)
	if err != nil {
		return nil, err
	}
	if narrow != "" {
		allowed := strings.Split(narrow, ",")
		for i := range allowed {
			allowed[i] = strings.TrimSpace(allowed[i])
		}
		svcs = slices.DeleteFunc(svcs, func(s *corev1.Service) bool { return !slices.Contains(allowed, s.Name) })
	}
	clusterset := p.Clusterset != nil && p.Clusterset.InClusterset() && !systemNamespace(pod.Namespace)
	var names []string
	add := func(n string) {
		if signers.ValidDNSName(n) && !slices.Contains(names, n) { // over-long names are dropped
			names = append(names, n)
		}
	}
	for _, svc := range svcs {
		base := svc.Name + "." + svc.Namespace + ".svc"
		hostname := ""
		if svc.Spec.ClusterIP == corev1.ClusterIPNone && pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name {
			hostname = pod.Spec.Hostname
		}
		add(base)
		add(base + "." + p.ClusterDomain)
		if hostname != "" {
			add(hostname + "." + base)
			add(hostname + "." + base + "." + p.ClusterDomain)
		}
		if !clusterset {
			continue
		}
		exported, err := p.exported(ctx, svc)
		if err != nil {
			return nil, err
		}
		if exported {
			add(base + "." + signers.ClustersetDomain)
			if hostname != "" {
				add(hostname + "." + p.ClusterName + "." + base + "." + signers.ClustersetDomain)
			}
		}
	}
	return names, nil
}

// matchingServices returns the Services whose non-empty selector matches
// the pod, sorted by name, through SelectorIndex.
func (p *ServiceDNS) matchingServices(ctx context.Context, pod *corev1.Pod) ([]*corev1.Service, error) {
	seen := map[string]*corev1.Service{}
	podLabels := labels.Set(pod.Labels)
	for k, v := range pod.Labels {
		var list corev1.ServiceList
		if err := p.Reader.List(ctx, &list, client.InNamespace(pod.Namespace), client.MatchingFields{SelectorIndex: k + "=" + v}); err != nil {
			return nil, fmt.Errorf("listing Services of namespace %s: %w", pod.Namespace, err)
		}
		for i := range list.Items {
			svc := &list.Items[i]
			if _, done := seen[svc.Name]; done {
				continue
			}
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
				seen[svc.Name] = svc
			}
		}
	}
	out := make([]*corev1.Service, 0, len(seen))
	for _, s := range seen {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// exported: a ServiceExport of the same name exists and is not Valid=False.
func (p *ServiceDNS) exported(ctx context.Context, svc *corev1.Service) (bool, error) {
	var se mcsv1beta1.ServiceExport
	if err := p.Reader.Get(ctx, client.ObjectKeyFromObject(svc), &se); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return false, nil
		}
		return false, fmt.Errorf("reading ServiceExport %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return !meta.IsStatusConditionFalse(se.Status.Conditions, string(mcsv1beta1.ServiceExportConditionValid)), nil
}

// systemNamespace: kube-* and anchorage-* never get clusterset names.
func systemNamespace(ns string) bool {
	return strings.HasPrefix(ns, "kube-") || strings.HasPrefix(ns, "anchorage-")
}

// Watch implements pcrsigner.Watcher: a Service or ServiceExport change
// re-queues the pending requests of its namespace, so that a pod waiting
// for its Service is issued as soon as the Service exists.
func (p *ServiceDNS) Watch(b *builder.Builder, requests client.Reader) *builder.Builder {
	enqueue := pcrsigner.EnqueuePending(requests, true)
	return b.Watches(&corev1.Service{}, enqueue).Watches(&mcsv1beta1.ServiceExport{}, enqueue)
}
