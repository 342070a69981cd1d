package enforce

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus metrics. Every label value is bounded by the config or a
// fixed set, never taken from a request: the method label holds one of the three limited
// methods, bucket labels name configured buckets, tier labels configured tiers or "".
type Metrics struct {
	decisions     *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	checkDuration prometheus.Histogram
	storeErrors   *prometheus.CounterVec
	upstream      *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	refused       *prometheus.CounterVec
	logSuppressed prometheus.Counter
	localDenied   prometheus.Counter

	handler atomic.Pointer[Handler] // the handler whose quotas the gauges read
}

// NewMetrics registers the proxy's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_decisions_total",
			Help: "Rate-limit decisions by limited method, outcome (ratelimit.Outcome; a JSON-RPC batch counts each limited request) and the caller's tier (a configured tier name, or empty for none).",
		}, []string{"method", "outcome", "tier"}),
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
			Help: "Upstream responses by status class (2xx, 4xx, ...), 'error' when the upstream could not be reached, 'timeout' when its response headers did not come in time (504).",
		}, []string{"class"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_config_reloads_total",
			Help: "Config file reloads by result: applied; rejected (invalid) and refused (it changes what only a restart applies, such as the names of buckets): the running config stays.",
		}, []string{"result"}),
	}
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_requests_refused_total",
		Help: "Requests the proxy answered itself before any limit applied, by reason: not_found, bad_path, method, body_not_allowed, upgrade, connection_header, header_lookalike, content_encoding, body_too_large, body_timeout, body_read, buffer_caller, buffer_total, streams_caller, streams_total, session_owner, header_repeated.",
	}, []string{"reason"})
	m.localDenied = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_deny_cache_rejections_total",
		Help: "Rejections the deny cache made without asking Redis (each one Redis would have made: --deny-cache); also counted in tollgate_decisions_total as rejected.",
	})
	m.logSuppressed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_decision_log_suppressed_total",
		Help: "Decision-log lines of unidentified callers not written: they are logged at a bounded rate.",
	})
	streams := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_streams_open",
		Help: "GET requests (event streams) open through the proxy.",
	}, func() float64 { return m.gauge(func(h *Handler) *quota { return h.streams }) })
	degraded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_degraded",
		Help: "1 while the proxy decides with local buckets because the store fails (failurePolicy Local), else 0.",
	}, func() float64 {
		if h := m.handler.Load(); h != nil {
			if on, _ := h.Degraded(); on {
				return 1
			}
		}
		return 0
	})
	buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_buffered_body_bytes",
		Help: "Request body bytes held in memory (taken from http.maxBufferedBytes).",
	}, func() float64 { return m.gauge(func(h *Handler) *quota { return h.bytes }) })
	// Every reload result starts at 0: a series that appears at 1 has no increase to
	// increase() or rate(), so the first refused reload would never reach an alert
	// (TollgateConfigReloadFailed in manifests/monitoring).
	for _, result := range []string{ReloadApplied, ReloadRejected, ReloadRefused} {
		m.reloads.WithLabelValues(result)
	}
	reg.MustRegister(m.decisions, m.rejections, m.checkDuration, m.storeErrors, m.upstream, m.reloads,
		m.refused, m.logSuppressed, m.localDenied, streams, buffered, degraded)
	return m
}

// observe makes the gauges read h's quotas.
func (m *Metrics) observe(h *Handler) { m.handler.Store(h) }

func (m *Metrics) gauge(q func(*Handler) *quota) float64 {
	h := m.handler.Load()
	if h == nil {
		return 0
	}
	return float64(q(h).inUse())
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

// The results of a config reload (the result label of tollgate_config_reloads_total).
const (
	ReloadApplied  = "applied"  // the new config is in force
	ReloadRejected = "rejected" // invalid: the running config stays
	ReloadRefused  = "refused"  // it changes what only a restart applies: the running config stays
)

// ConfigReload counts a config reload with its result (ReloadApplied, ReloadRejected,
// ReloadRefused).
func (m *Metrics) ConfigReload(result string) { m.reloads.WithLabelValues(result).Inc() }
