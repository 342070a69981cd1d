package monitoring_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// interval is the rule evaluation interval (Prometheus's default) and the spacing of the
// synthetic samples.
const interval = time.Minute

// TestAlerts evaluates each alert's expression with Prometheus's PromQL engine on synthetic
// series, as the rule manager does: at every evaluation interval, an alert becomes pending when
// its expression returns a series and fires once it has returned it at every evaluation for
// the rule's `for` duration. Each alert fires on a bad case and stays quiet on a healthy one.
// Series use promtool's notation: 'a+bxN' is N+1 samples from a rising by b, '_' is no sample.
func TestAlerts(t *testing.T) {
	rules := alerts(t)
	proxy := `{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1"}`
	server := map[string]string{"namespace": "tools", "mcpserver": "search"}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	type series = struct{ metric, values string }
	cases := map[string]struct {
		reason string
		alert  string
		series []series
		at     time.Duration
		want   []map[string]string // the firing alerts' labels, rule labels included
	}{
		"FailingOpenFires": {
			reason: "Calls let through without a limit for 10 minutes: the alert fires for the server.",
			alert:  "TollgateFailingOpen",
			series: []series{{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="fail_open"}`, "0+60x20"}},
			at:     20 * time.Minute,
			want:   []map[string]string{with(server, "severity", "warning")},
		},
		"FailingOpenQuiet": {
			reason: "Only allowed and rejected decisions: no failing open.",
			alert:  "TollgateFailingOpen",
			series: []series{
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="allowed"}`, "0+60x20"},
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="fail_open"}`, "0x20"},
			},
			at: 20 * time.Minute,
		},
		"FailingOpenTooShort": {
			reason: "Two minutes of failing open (a Redis failover) stay under the 5 minutes of `for`.",
			alert:  "TollgateFailingOpen",
			series: []series{{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="fail_open"}`, "0x17 60 120 120"}},
			at:     20 * time.Minute,
		},
		"FailingClosedFires": {
			reason: "Limited calls refused with 503 for 5 minutes: a critical alert.",
			alert:  "TollgateFailingClosed",
			series: []series{{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="fail_closed"}`, "0x10 0+30x10"}},
			at:     20 * time.Minute,
			want:   []map[string]string{with(server, "severity", "critical")},
		},
		"FailingClosedQuiet": {
			reason: "No fail_closed decision since the counter started: quiet.",
			alert:  "TollgateFailingClosed",
			series: []series{{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="fail_closed"}`, "3x20"}},
			at:     20 * time.Minute,
		},
		"DegradedFires": {
			reason: "One of two replicas has decided with local buckets for 10 minutes.",
			alert:  "TollgateDegraded",
			series: []series{
				{`tollgate_degraded{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1"}`, "0x10 1x10"},
				{`tollgate_degraded{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-2"}`, "0x20"},
			},
			at:   20 * time.Minute,
			want: []map[string]string{with(server, "severity", "warning")},
		},
		"DegradedQuiet": {
			reason: "The store answers: tollgate_degraded is 0.",
			alert:  "TollgateDegraded",
			series: []series{{`tollgate_degraded` + proxy, "0x20"}},
			at:     20 * time.Minute,
		},
		"CircuitBreakerOpenFires": {
			reason: "One replica's breaker open for the last 8 minutes, with no traffic (no calls failed at once).",
			alert:  "TollgateCircuitBreakerOpen",
			series: []series{
				{`tollgate_store_circuit_open` + proxy, "0x12 1x8"},
				{`tollgate_store_errors_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", kind="circuit_open"}`, "0x20"},
			},
			at:   20 * time.Minute,
			want: []map[string]string{with(server, "severity", "warning")},
		},
		"CircuitBreakerOpenQuiet": {
			reason: "Store timeouts now and then, but the breaker never opened; and a breaker open for a minute only.",
			alert:  "TollgateCircuitBreakerOpen",
			series: []series{
				{`tollgate_store_errors_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", kind="timeout"}`, "0+1x20"},
				{`tollgate_store_circuit_open` + proxy, "0x18 1 0"},
			},
			at: 20 * time.Minute,
		},
		"ConfigGenerationSkewFires": {
			reason: "One replica still enforces generation 3 fifteen minutes after the other took 4.",
			alert:  "TollgateConfigGenerationSkew",
			series: []series{
				{`tollgate_config_generation` + proxy, "3x5 4x15"},
				{`tollgate_config_generation{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-2"}`, "3x20"},
			},
			at:   20 * time.Minute,
			want: []map[string]string{with(server, "severity", "warning")},
		},
		"ConfigGenerationSkewQuiet": {
			reason: "The second replica took generation 4 two minutes after the first (the kubelet's ConfigMap refresh): no alert.",
			alert:  "TollgateConfigGenerationSkew",
			series: []series{
				{`tollgate_config_generation` + proxy, "3x5 4x15"},
				{`tollgate_config_generation{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-2"}`, "3x7 4x13"},
			},
			at: 20 * time.Minute,
		},
		"LatencyHighFires": {
			reason: "Every decision of the last 20 minutes took 25-50 ms: p99 above 25 ms.",
			alert:  "TollgateLimiterLatencyHigh",
			series: latencySeries(true),
			at:     30 * time.Minute,
			want:   []map[string]string{with(server, "severity", "warning")},
		},
		"LatencyHighQuiet": {
			reason: "Every decision took under 5 ms.",
			alert:  "TollgateLimiterLatencyHigh",
			series: latencySeries(false),
			at:     30 * time.Minute,
		},
		"RejectionRatioHighFires": {
			reason: "Half of 10 calls/s rejected for 20 minutes.",
			alert:  "TollgateRejectionRatioHigh",
			series: []series{
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="allowed"}`, "0+300x40"},
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="rejected"}`, "0+300x40"},
			},
			at:   40 * time.Minute,
			want: []map[string]string{with(server, "severity", "info")},
		},
		"RejectionRatioHighQuietLowRatio": {
			reason: "5 % of 10 calls/s rejected: a limit doing its job.",
			alert:  "TollgateRejectionRatioHigh",
			series: []series{
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="allowed"}`, "0+570x40"},
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="rejected"}`, "0+30x40"},
			},
			at: 40 * time.Minute,
		},
		"RejectionRatioHighQuietLowTraffic": {
			reason: "Half of the calls rejected, but 0.2 calls/s in all: below the traffic floor.",
			alert:  "TollgateRejectionRatioHigh",
			series: []series{
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="allowed"}`, "0+6x40"},
				{`tollgate_decisions_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", method="tools/call", outcome="rejected"}`, "0+6x40"},
			},
			at: 40 * time.Minute,
		},
		"ProxyDownFires": {
			reason: "A proxy pod has not answered its scrapes for 10 minutes.",
			alert:  "TollgateProxyDown",
			series: []series{{`up` + proxy, "1x10 0x10"}},
			at:     20 * time.Minute,
			want:   []map[string]string{with(server, "severity", "critical", "job", "tollgate-proxy", "pod", "search-proxy-1")},
		},
		"ProxyDownQuiet": {
			reason: "Every scrape answered.",
			alert:  "TollgateProxyDown",
			series: []series{{`up` + proxy, "1x20"}},
			at:     20 * time.Minute,
		},
		"ProxyReplicasUnavailableFires": {
			reason: "One of two proxy replicas unavailable for 15 minutes; another team's Deployment short of replicas is not Tollgate's.",
			alert:  "TollgateProxyReplicasUnavailable",
			series: []series{
				{`kube_deployment_spec_replicas{job="kube-state-metrics", namespace="tools", deployment="search-proxy"}`, "2x30"},
				{`kube_deployment_status_replicas_available{job="kube-state-metrics", namespace="tools", deployment="search-proxy"}`, "2x15 1x15"},
				{`kube_deployment_labels{job="kube-state-metrics", namespace="tools", deployment="search-proxy", label_app_kubernetes_io_managed_by="tollgate-operator"}`, "1x30"},
				{`kube_deployment_spec_replicas{job="kube-state-metrics", namespace="tools", deployment="other"}`, "3x30"},
				{`kube_deployment_status_replicas_available{job="kube-state-metrics", namespace="tools", deployment="other"}`, "0x30"},
				{`kube_deployment_labels{job="kube-state-metrics", namespace="tools", deployment="other"}`, "1x30"},
			},
			at:   30 * time.Minute,
			want: []map[string]string{{"job": "kube-state-metrics", "namespace": "tools", "deployment": "search-proxy", "severity": "warning"}},
		},
		"ProxyReplicasUnavailableQuiet": {
			reason: "Both replicas available.",
			alert:  "TollgateProxyReplicasUnavailable",
			series: []series{
				{`kube_deployment_spec_replicas{job="kube-state-metrics", namespace="tools", deployment="search-proxy"}`, "2x30"},
				{`kube_deployment_status_replicas_available{job="kube-state-metrics", namespace="tools", deployment="search-proxy"}`, "2x30"},
				{`kube_deployment_labels{job="kube-state-metrics", namespace="tools", deployment="search-proxy", label_app_kubernetes_io_managed_by="tollgate-operator"}`, "1x30"},
			},
			at: 30 * time.Minute,
		},
		"ConfigReloadFailedFires": {
			reason: "One refused reload (the counter starts at 0, as the proxy initialises it) fires at once.",
			alert:  "TollgateConfigReloadFailed",
			series: []series{
				{`tollgate_config_reloads_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", result="refused"}`, "0x10 1x10"},
				{`tollgate_config_reloads_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", result="applied"}`, "0+1x20"},
			},
			at:   20 * time.Minute,
			want: []map[string]string{with(server, "severity", "warning", "result", "refused")},
		},
		"ConfigReloadFailedQuiet": {
			reason: "Every reload applied; one rejected an hour ago is forgotten.",
			alert:  "TollgateConfigReloadFailed",
			series: []series{
				{`tollgate_config_reloads_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", result="rejected"}`, "0x10 1x70"},
				{`tollgate_config_reloads_total{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", result="applied"}`, "0+1x80"},
			},
			at: 80 * time.Minute,
		},
		"OperatorReconcileErrorsFires": {
			reason: "Reconciles have failed for 20 minutes.",
			alert:  "TollgateOperatorReconcileErrors",
			series: []series{{`controller_runtime_reconcile_errors_total{job="tollgate-operator", namespace="tollgate-system", pod="tollgate-operator-1", controller="mcpserver"}`, "0+2x30"}},
			at:     30 * time.Minute,
			want:   []map[string]string{{"namespace": "tollgate-system", "controller": "mcpserver", "severity": "warning"}},
		},
		"OperatorReconcileErrorsQuiet": {
			reason: "Errors stopped 10 minutes ago (a transient conflict).",
			alert:  "TollgateOperatorReconcileErrors",
			series: []series{{`controller_runtime_reconcile_errors_total{job="tollgate-operator", namespace="tollgate-system", pod="tollgate-operator-1", controller="mcpserver"}`, "0+2x20 40x10"}},
			at:     30 * time.Minute,
		},
		"OperatorDownFires": {
			reason: "No operator replica has been scraped for 15 minutes: both down, or gone.",
			alert:  "TollgateOperatorDown",
			series: []series{
				{`up{job="tollgate-operator", namespace="tollgate-system", pod="tollgate-operator-1"}`, "1x10 0x20"},
				{`up{job="tollgate-operator", namespace="tollgate-system", pod="tollgate-operator-2"}`, "1x10"},
			},
			at:   30 * time.Minute,
			want: []map[string]string{{"severity": "warning"}}, // absent() of a filtered vector has no labels
		},
		"OperatorDownQuiet": {
			reason: "One replica of two answers (the standby may restart).",
			alert:  "TollgateOperatorDown",
			series: []series{
				{`up{job="tollgate-operator", namespace="tollgate-system", pod="tollgate-operator-1"}`, "1x30"},
				{`up{job="tollgate-operator", namespace="tollgate-system", pod="tollgate-operator-2"}`, "0x30"},
			},
			at: 30 * time.Minute,
		},
	}
	tested := map[string]map[bool]bool{} // alert → fires / stays quiet: both covered?
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: promQL})
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rule, ok := rules[tc.alert]
			if !ok {
				t.Fatalf("no alert %s in %s", tc.alert, rulesFile)
			}
			if tested[tc.alert] == nil {
				tested[tc.alert] = map[bool]bool{}
			}
			tested[tc.alert][len(tc.want) > 0] = true
			db := &memSeries{}
			for _, s := range tc.series {
				db.load(t, s.metric, s.values)
			}
			got := firing(t, engine, db, rule.Expr, time.Duration(rule.For), tc.at)
			want := tc.want
			for _, l := range want {
				l["alertname"] = tc.alert
			}
			for i := range got {
				for k, v := range rule.Labels {
					got[i][k] = v
				}
				got[i]["alertname"] = tc.alert
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s\n%s at %v: firing alerts -want +got:\n%s", tc.reason, tc.alert, tc.at, diff)
			}
		})
	}
	for name := range rules {
		if !tested[name][true] || !tested[name][false] {
			t.Errorf("alert %s needs a case where it fires and one where it stays quiet", name)
		}
	}
}

// latencySeries is a decision-latency histogram at 10 decisions/s: every decision below 5 ms,
// or every one between 25 and 50 ms.
func latencySeries(slow bool) []struct{ metric, values string } {
	var out []struct{ metric, values string }
	for _, le := range []string{"0.005", "0.01", "0.025", "0.05", "0.1", "+Inf"} {
		v := "0+600x30"
		if slow && (le == "0.005" || le == "0.01" || le == "0.025") {
			v = "0x30"
		}
		out = append(out, struct{ metric, values string }{
			`tollgate_limiter_check_duration_seconds_bucket{job="tollgate-proxy", namespace="tools", mcpserver="search", pod="search-proxy-1", le="` + le + `"}`, v,
		})
	}
	return out
}

// firing evaluates expr as the rule manager would for an alert with the given `for`: at every
// evaluation from at-forDur to at. A series the expression returned at each of them is a
// firing alert at `at` (it became active no later than at-forDur); its labels, without the
// metric name, are returned sorted.
func firing(t *testing.T, engine *promql.Engine, db storage.Queryable, expr string, forDur, at time.Duration) []map[string]string {
	t.Helper()
	start, end := time.Unix(0, 0).Add(at-forDur), time.Unix(0, 0).Add(at)
	q, err := engine.NewRangeQuery(context.Background(), db, nil, expr, start, end, interval)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s: %v", expr, res.Err)
	}
	m, err := res.Matrix()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	steps := int(forDur/interval) + 1
	out := []map[string]string{}
	for _, s := range m {
		if len(s.Floats) < steps {
			continue // not active at every evaluation: pending at most
		}
		l := s.Metric.Map()
		delete(l, model.MetricNameLabel)
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return labels.FromMap(out[i]).String() < labels.FromMap(out[j]).String() })
	if len(out) == 0 {
		return nil
	}
	return out
}

// memSeries is an in-memory storage.Queryable of synthetic float series: enough for the
// engine to evaluate the rules, without a TSDB.
type memSeries struct{ series []storage.Series }

// load adds a series in promtool's notation: `metric{labels}` and values one interval apart
// from time 0 ('a+bxN', 'axN', '_' for no sample, 'stale').
func (db *memSeries) load(t *testing.T, metric, values string) {
	t.Helper()
	lbls, vals, err := promQL.ParseSeriesDesc(metric + " " + values)
	if err != nil {
		t.Fatalf("series %s %s: %v", metric, values, err)
	}
	var samples []chunks.Sample
	for i, v := range vals {
		if v.Omitted {
			continue
		}
		samples = append(samples, fsample{t: (time.Duration(i) * interval).Milliseconds(), f: v.Value})
	}
	db.series = append(db.series, storage.NewListSeries(lbls, samples))
}

func (db *memSeries) Querier(_, _ int64) (storage.Querier, error) { return db, nil }

func (db *memSeries) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range db.series {
		match := true
		for _, m := range ms {
			if !m.Matches(s.Labels().Get(m.Name)) {
				match = false
				break
			}
		}
		if match {
			out = append(out, s)
		}
	}
	// Always sorted: the engine merges and joins series in label order.
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
	return &seriesSet{series: out, i: -1}
}

func (*memSeries) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (*memSeries) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (*memSeries) Close() error { return nil }

type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool                      { s.i++; return s.i < len(s.series) }
func (s *seriesSet) At() storage.Series              { return s.series[s.i] }
func (*seriesSet) Err() error                        { return nil }
func (*seriesSet) Warnings() annotations.Annotations { return nil }

// fsample is one float sample.
type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                    { return s.t }
func (fsample) ST() int64                     { return 0 }
func (s fsample) F() float64                  { return s.f }
func (fsample) H() *histogram.Histogram       { return nil }
func (fsample) FH() *histogram.FloatHistogram { return nil }
func (fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fsample) Copy() chunks.Sample         { return s }
