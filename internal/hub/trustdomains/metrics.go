package trustdomains

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the controller. A nil *Metrics records nothing.
type Metrics struct {
	fetches *prometheus.CounterVec
}

// NewMetrics registers the controller's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_hub_trustdomain_fetches_total",
			Help: "Polls of TrustDomain bundle endpoints, by outcome (the Ready condition's reason).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.fetches)
	return m
}

func (m *Metrics) observe(reason string) {
	if m == nil {
		return
	}
	m.fetches.WithLabelValues(reason).Inc()
}
