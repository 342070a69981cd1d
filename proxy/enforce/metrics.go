package enforce

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus metrics. Every label value is bounded by the config or a
// fixed set, never taken from a request: the method label holds one of the three limited
// methods, bucket labels name configured buckets.
type Metrics struct {
	decisions     *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	checkDuration prometheus.Histogram
	storeErrors   *prometheus.CounterVec
	upstream      *prometheus.CounterVec
	reloads       *prometheus.CounterVec
}

// Decision outcomes, the values of tollgate_decisions_total's outcome label.
const (
	OutcomeAllowed        = "allowed"
	OutcomeRejected       = "rejected"
	OutcomeShadowRejected = "shadow_rejected" // Shadow mode: would have been rejected, let through
	OutcomeFailOpen       = "fail_open"       // store unreachable, failurePolicy Allow
	OutcomeFailClosed     = "fail_closed"     // store unreachable, failurePolicy Deny
	OutcomeInvalid        = "invalid"         // a request no wait could admit (cost above capacity)
	OutcomeUnidentified   = "unidentified"    // a per-user limit applies and no identity was given: 401
)

// NewMetrics registers the proxy's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_decisions_total",
			Help: "Rate-limit decisions by limited method and outcome (a JSON-RPC batch counts each limited request).",
		}, []string{"method", "outcome"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_rejections_total",
			Help: "Rejections (and shadow rejections) by the bucket that rejected, named as in the RateLimit-Policy header.",
		}, []string{"bucket", "scope"}),
		checkDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_limiter_check_duration_seconds",
			Help:    "Time of one limiter decision (one Redis round trip), errors included.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_store_errors_total",
			Help: "Limiter store (Redis) errors by kind: timeout, circuit_open, error.",
		}, []string{"kind"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_upstream_responses_total",
			Help: "Upstream responses by status class (2xx, 4xx, ...), and 'error' when the upstream could not be reached.",
		}, []string{"class"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_config_reloads_total",
			Help: "Config file reloads by result: applied, rejected (invalid; the running config stays), restart_needed.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.decisions, m.rejections, m.checkDuration, m.storeErrors, m.upstream, m.reloads)
	return m
}

// upstreamClasses are the class label values of upstream responses, by status / 100.
var upstreamClasses = [...]string{"0xx", "1xx", "2xx", "3xx", "4xx", "5xx"}

// upstreamResponse counts an upstream response by its status class.
func (m *Metrics) upstreamResponse(status int) {
	class := "other"
	if c := status / 100; c >= 0 && c < len(upstreamClasses) {
		class = upstreamClasses[c]
	}
	m.upstream.WithLabelValues(class).Inc()
}

// ConfigReload counts a config reload with its result.
func (m *Metrics) ConfigReload(result string) { m.reloads.WithLabelValues(result).Inc() }
