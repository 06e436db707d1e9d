package app_test

import (
	"crypto/x509"
	"slices"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/agent/profiles"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

func TestServiceDNS(t *testing.T) {
	e := newEnv(t)
	e.startAgent("agent", func(o *app.Options) {
		o.ClustersetMember = true
		o.ServiceDNSPendingTimeout = 15 * time.Second
	})

	svc := func(t *testing.T, ns, name string, selector map[string]string, mutate ...func(*corev1.Service)) {
		t.Helper()
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Port: 443}}},
		}
		for _, m := range mutate {
			m(s)
		}
		if err := e.c.Create(e.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	export := func(t *testing.T, ns, name string) *mcsv1beta1.ServiceExport {
		t.Helper()
		se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if err := e.c.Create(e.ctx, se); err != nil {
			t.Fatal(err)
		}
		return se
	}
	dnsPod := func(ns, name string, labels, ann map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
		p := pod(ns, name, signers.ServiceDNSSignerName, "ECDSAP256", labels, ann)
		for _, m := range mutate {
			m(p)
		}
		return p
	}
	// names waits for the pod's latest request and returns the DNS SANs of
	// its certificate.
	names := func(t *testing.T, p *kubeletsim.Pod) []string {
		t.Helper()
		e.waitIssued(p)
		chain, err := signers.ParseCertificatesPEM([]byte(e.latest(p).Status.CertificateChain))
		if err != nil {
			t.Fatal(err)
		}
		if len(chain[0].URIs) != 0 || !slices.Equal(chain[0].ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
			t.Errorf("service-dns leaf has URIs %v, EKU %v", chain[0].URIs, chain[0].ExtKeyUsage)
		}
		if got, err := signers.IssuerFromCertificate(chain[0]); err != nil || got != testIssuer {
			t.Errorf("IssuerFromCertificate = %q, %v", got, err)
		}
		return chain[0].DNSNames
	}
	want := func(t *testing.T, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("DNS names\n got %q\nwant %q", got, want)
		}
	}

	t.Run("one Service", func(t *testing.T) {
		ns := e.namespace("one")
		svc(t, ns, "web", map[string]string{"app": "web"})
		want(t, names(t, e.runPod(dnsPod(ns, "web-1", map[string]string{"app": "web", "pod-template-hash": "x"}, nil))),
			"web.one.svc", "web.one.svc.cluster.local")
	})

	t.Run("several Services, and ones that select nothing", func(t *testing.T) {
		ns := e.namespace("several")
		svc(t, ns, "web", map[string]string{"app": "web"})
		svc(t, ns, "api", map[string]string{"app": "web", "tier": "api"})
		svc(t, ns, "other", map[string]string{"app": "other"})
		svc(t, ns, "manual", nil) // no selector: endpoints managed by hand
		svc(t, ns, "ext", nil, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeExternalName
			s.Spec.ExternalName = "example.com"
			s.Spec.Ports = nil
		})
		want(t, names(t, e.runPod(dnsPod(ns, "p", map[string]string{"app": "web", "tier": "api"}, nil))),
			"api.several.svc", "api.several.svc.cluster.local", "web.several.svc", "web.several.svc.cluster.local")
	})

	t.Run("narrowing annotation", func(t *testing.T) {
		ns := e.namespace("narrow")
		svc(t, ns, "web", map[string]string{"app": "web"})
		svc(t, ns, "api", map[string]string{"app": "web"})
		want(t, names(t, e.runPod(dnsPod(ns, "p", map[string]string{"app": "web"}, map[string]string{profiles.ServicesAnnotation: "api, nosuch"}))),
			"api.narrow.svc", "api.narrow.svc.cluster.local")
	})

	t.Run("ServiceExport adds the clusterset name, removing it drops the name at the next refresh", func(t *testing.T) {
		ns := e.namespace("exported")
		svc(t, ns, "web", map[string]string{"app": "web"})
		svc(t, ns, "invalid", map[string]string{"app": "web"})
		se := export(t, ns, "web")
		bad := export(t, ns, "invalid")
		meta.SetStatusCondition(&bad.Status.Conditions, metav1.Condition{Type: string(mcsv1beta1.ServiceExportConditionValid), Status: metav1.ConditionFalse, Reason: "InvalidServiceType", Message: "test"})
		if err := e.c.Status().Update(e.ctx, bad); err != nil {
			t.Fatal(err)
		}
		// The agent's cache must have seen both exports before the pod asks.
		time.Sleep(500 * time.Millisecond)
		p := e.runPod(dnsPod(ns, "p", map[string]string{"app": "web"}, nil))
		want(t, names(t, p), "invalid.exported.svc", "invalid.exported.svc.cluster.local",
			"web.exported.svc", "web.exported.svc.cluster.local", "web.exported.svc.clusterset.local")

		if err := e.c.Delete(e.ctx, se); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		first := e.latest(p).Name
		if err := e.sim.Refresh(e.ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "a refreshed certificate", func() (bool, error) {
			r := p.Requests()
			return len(r) > 0 && r[len(r)-1].Name != first && kubeletsim.TerminalCondition(e.latest(p)) != nil, nil
		})
		want(t, names(t, p), "invalid.exported.svc", "invalid.exported.svc.cluster.local", "web.exported.svc", "web.exported.svc.cluster.local")
	})

	t.Run("headless Service with hostname and subdomain", func(t *testing.T) {
		ns := e.namespace("headless")
		svc(t, ns, "db", map[string]string{"app": "db"}, func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone })
		export(t, ns, "db")
		time.Sleep(300 * time.Millisecond)
		want(t, names(t, e.runPod(dnsPod(ns, "db-0", map[string]string{"app": "db"}, nil, func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "db-0", "db" }))),
			"db.headless.svc", "db.headless.svc.cluster.local", "db-0.db.headless.svc", "db-0.db.headless.svc.cluster.local",
			"db.headless.svc.clusterset.local", "db-0.east.db.headless.svc.clusterset.local")
	})

	t.Run("system namespaces get no clusterset names", func(t *testing.T) {
		ns := e.namespace("kube-extra")
		svc(t, ns, "dns", map[string]string{"app": "dns"})
		export(t, ns, "dns")
		time.Sleep(300 * time.Millisecond)
		want(t, names(t, e.runPod(dnsPod(ns, "p", map[string]string{"app": "dns"}, nil))), "dns.kube-extra.svc", "dns.kube-extra.svc.cluster.local")
	})

	t.Run("a pod without a Service waits, with an Event, and is issued once a Service appears", func(t *testing.T) {
		ns := e.namespace("waiting")
		p := e.runPod(dnsPod(ns, "p", map[string]string{"app": "late"}, nil))
		eventually(t, 20*time.Second, "a NoMatchingService Event on the pod", func() (bool, error) {
			var evs eventsv1.EventList
			if err := e.c.List(e.ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, err
			}
			for _, ev := range evs.Items {
				if ev.Regarding.Name == "p" && ev.Reason == profiles.ReasonNoMatchingService {
					return true, nil
				}
			}
			return false, nil
		})
		if c := kubeletsim.TerminalCondition(e.latest(p)); c != nil {
			t.Fatalf("a waiting request got %s/%s", c.Type, c.Reason)
		}
		svc(t, ns, "late", map[string]string{"app": "late"})
		start := time.Now()
		want(t, names(t, p), "late.waiting.svc", "late.waiting.svc.cluster.local")
		t.Logf("issued %v after the Service was created", time.Since(start).Round(time.Millisecond))
	})

	t.Run("a pod that never gets a Service fails after the timeout", func(t *testing.T) {
		ns := e.namespace("never")
		p := e.runPod(dnsPod(ns, "p", map[string]string{"app": "none"}, nil))
		var req *certsv1.PodCertificateRequest
		eventually(t, 40*time.Second, "Failed", func() (bool, error) {
			req = e.latest(p)
			return kubeletsim.TerminalCondition(req) != nil, nil
		})
		c := kubeletsim.TerminalCondition(req)
		if c.Type != certsv1.PodCertificateRequestConditionTypeFailed || c.Reason != profiles.ReasonNoMatchingService {
			t.Errorf("got %s/%s: %s", c.Type, c.Reason, c.Message)
		}
		if age := c.LastTransitionTime.Sub(req.CreationTimestamp.Time); age < 15*time.Second {
			t.Errorf("failed after %v, before the 15s timeout", age)
		}
	})
}
