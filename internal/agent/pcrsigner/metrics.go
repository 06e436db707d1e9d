package pcrsigner

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	certsv1 "k8s.io/api/certificates/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Metrics of the signers, labelled by signer name.
type Metrics struct {
	Issued       *prometheus.CounterVec
	Denied       *prometheus.CounterVec
	Failed       *prometheus.CounterVec
	Latency      *prometheus.HistogramVec
	SignDuration *prometheus.HistogramVec
	reg          prometheus.Registerer
}

// NewMetrics registers the signer metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_signer_issued_total", Help: "PodCertificateRequests issued.",
		}, []string{"signer"}),
		Denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_signer_denied_total", Help: "PodCertificateRequests denied, by reason.",
		}, []string{"signer", "reason"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_signer_failed_total", Help: "PodCertificateRequests failed, by reason.",
		}, []string{"signer", "reason"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anchorage_signer_issuance_latency_seconds",
			Help:    "Time from a PodCertificateRequest's creation to its Issued status write.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}, []string{"signer"}),
		SignDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anchorage_signer_sign_duration_seconds",
			Help:    "Time to build and sign one certificate (no API calls).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}, []string{"signer"}),
		reg: reg,
	}
	reg.MustRegister(m.Issued, m.Denied, m.Failed, m.Latency, m.SignDuration)
	return m
}

// registerPending exports the number of requests of signer still waiting,
// counted from the informer cache at scrape time.
func (m *Metrics) registerPending(signer string, requests client.Reader) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "anchorage_signer_pending_requests",
		Help:        "PodCertificateRequests of this signer without Issued, Denied or Failed.",
		ConstLabels: prometheus.Labels{"signer": signer},
	}, func() float64 {
		var list certsv1.PodCertificateRequestList
		if err := requests.List(context.Background(), &list); err != nil {
			return 0
		}
		n := 0
		for i := range list.Items {
			if !Terminal(&list.Items[i]) {
				n++
			}
		}
		return float64(n)
	}))
}
