package app_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/anchorage-dev/anchorage/cmd/member-agent/app"
	"github.com/anchorage-dev/anchorage/internal/agent/profiles"
	"github.com/anchorage-dev/anchorage/internal/kubeletsim"
	"github.com/anchorage-dev/anchorage/pkg/signers"
)

// Messages built from pod-controlled input stay within what the apiserver
// accepts (condition messages 32 KiB, Event notes 1 KiB), so a request
// with huge user annotations still ends Denied or Failed, and its pod gets
// the Event.
func TestBoundedMessages(t *testing.T) {
	e := newEnv(t)
	e.startAgent("agent", func(o *app.Options) { o.ServiceDNSPendingTimeout = 5 * time.Second })
	ns := e.namespace("bounded")

	const maxNote = 1024 // events.k8s.io/v1 note limit
	terminal := func(t *testing.T, p *kubeletsim.Pod, condType, reason string, contains ...string) {
		t.Helper()
		var req *certsv1.PodCertificateRequest
		eventually(t, 60*time.Second, condType, func() (bool, error) {
			req = e.latest(p)
			return kubeletsim.TerminalCondition(req) != nil, nil
		})
		c := kubeletsim.TerminalCondition(req)
		if c.Type != condType || c.Reason != reason {
			t.Fatalf("got %s/%s, want %s/%s", c.Type, c.Reason, condType, reason)
		}
		if len(c.Message) > maxNote {
			t.Errorf("condition message is %d bytes, want at most %d", len(c.Message), maxNote)
		}
		for _, s := range contains {
			if !strings.Contains(c.Message, s) {
				t.Errorf("condition message %q does not contain %q", c.Message, s)
			}
		}
		eventually(t, 20*time.Second, "a Warning Event on the pod", func() (bool, error) {
			var evs eventsv1.EventList
			if err := e.c.List(e.ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, err
			}
			for _, ev := range evs.Items {
				if ev.Regarding.Name == p.Object().Name && ev.Type == "Warning" && ev.Reason == reason {
					return len(ev.Note) <= maxNote, nil
				}
			}
			return false, nil
		})
	}

	t.Run("many unknown user annotations", func(t *testing.T) {
		// 200 keys of about 300 bytes: a list of them all is over 32 KiB.
		ann := map[string]string{}
		domain := strings.Repeat(strings.Repeat("d", 60)+".", 3) + "example"
		for i := range 200 {
			ann[fmt.Sprintf("k%03d.%s/%s", i, domain, strings.Repeat("n", 60))] = "v"
		}
		p := e.runPod(pod(ns, "keys", signers.SPIFFESignerName, "ECDSAP256", nil, ann))
		first := fmt.Sprintf("k000.%s/%s", domain, strings.Repeat("n", 60))
		terminal(t, p, certsv1.PodCertificateRequestConditionTypeDenied, certsv1.PodCertificateRequestConditionInvalidUserConfig, first, "more")
	})

	t.Run("huge narrowing annotation", func(t *testing.T) {
		narrow := "web," + strings.Repeat("x", 100*1024)
		p := e.runPod(pod(ns, "narrow", signers.ServiceDNSSignerName, "ECDSAP256", map[string]string{"app": "none"},
			map[string]string{profiles.ServicesAnnotation: narrow}))
		terminal(t, p, certsv1.PodCertificateRequestConditionTypeFailed, profiles.ReasonNoMatchingService, `"web,xxx`, "selects pod bounded/narrow")
	})
}
