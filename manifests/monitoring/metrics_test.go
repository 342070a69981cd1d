package monitoring_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/operator/manager"
	"github.com/tollgate-dev/tollgate/proxy/app"
)

// inventory is, for every metric a source exposes (a histogram as its _bucket, _sum and
// _count series), its label names with the values seen. A nil set of values means any:
// metrics of other exporters, whose values this test does not see.
type inventory map[string]map[string]map[string]bool

// add records the metric families of one source.
func (inv inventory) add(families map[string]*dto.MetricFamily) {
	for name, mf := range families {
		series := []string{name}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			series = []string{name + "_bucket", name + "_sum", name + "_count"}
		case dto.MetricType_SUMMARY:
			series = []string{name, name + "_sum", name + "_count"}
		}
		for _, s := range series {
			if inv[s] == nil {
				inv[s] = map[string]map[string]bool{}
			}
			see := func(label, value string) {
				if inv[s][label] == nil {
					inv[s][label] = map[string]bool{}
				}
				inv[s][label][value] = true
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					see(lp.GetName(), lp.GetValue())
				}
				if strings.HasSuffix(s, "_bucket") {
					for _, b := range m.GetHistogram().GetBucket() {
						see("le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
					}
					see("le", "+Inf")
				}
				if mf.GetType() == dto.MetricType_SUMMARY && s == name {
					for _, q := range m.GetSummary().GetQuantile() {
						see("quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64))
					}
				}
			}
		}
	}
}

// targetLabels are the labels Prometheus and the PodMonitors add to every scraped series
// (manifests/monitoring/podmonitor-*.yaml): they are not in /metrics.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "mcpserver"}

// external are the metrics the rules use that neither Tollgate binary exposes: Prometheus's
// own `up` of every target, and kube-state-metrics' Deployment metrics (the label_ label of
// kube_deployment_labels needs --metric-labels-allowlist=deployments=[app.kubernetes.io/managed-by]).
var external = inventory{
	"up":                            {},
	"kube_deployment_spec_replicas": {"deployment": nil},
	"kube_deployment_status_replicas_available": {"deployment": nil},
	"kube_deployment_labels":                    {"deployment": nil, "label_app_kubernetes_io_managed_by": nil},
}

// TestMetricsExist: every metric an alert or a dashboard panel reads exists in what a running
// proxy serves on /metrics or in the operator manager's registry — scraped here, not listed by
// hand — and every label it matches on or groups by is one that metric carries (or one the
// scrape adds). A renamed metric or label in the code fails here before a dashboard goes
// blank in production.
func TestMetricsExist(t *testing.T) {
	inv := inventory{}
	for name, labels := range external {
		inv[name] = labels
	}
	for _, f := range scrapeProxies(t) {
		inv.add(f)
	}
	inv.add(operatorMetrics(t))

	exprs := append(ruleExpressions(t), dashboardExpressions(t)...)
	for _, e := range exprs {
		expr, err := promQL.ParseExpr(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		for _, problem := range unknownNames(inv, expr) {
			t.Errorf("%s: %s", e.where, problem)
		}
	}
}

// unknownNames lists the metrics expr selects that inv lacks; the labels its selectors match
// on that the metric lacks, and the values they match (= or =~) that the metric never
// showed — each alternative of a|b|c, or any value for another regular expression; and the
// labels its aggregations group by that none of the metrics below them carries.
func unknownNames(inv inventory, expr parser.Expr) []string {
	var problems []string
	has := func(known map[string]map[string]bool, l string) bool {
		_, ok := known[l]
		return ok || slices.Contains(targetLabels, l)
	}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			known, ok := inv[n.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %s is exposed by neither the proxy nor the operator", n.Name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					continue
				}
				if !has(known, m.Name) {
					problems = append(problems, fmt.Sprintf("%s has no label %s", n.Name, m.Name))
					continue
				}
				seen := known[m.Name]
				if seen == nil || (m.Type != labels.MatchEqual && m.Type != labels.MatchRegexp) {
					continue // a target label, another exporter's, or a negative matcher
				}
				for _, want := range matchedValues(m, seen) {
					problems = append(problems, fmt.Sprintf("%s{%s} never showed %s", n.Name, m.Name, want))
				}
			}
		case *parser.AggregateExpr:
			below := map[string]map[string]bool{}
			parser.Inspect(n.Expr, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok {
					for l := range inv[vs.Name] {
						below[l] = nil
					}
				}
				return nil
			})
			for _, l := range n.Grouping {
				if !has(below, l) {
					problems = append(problems, fmt.Sprintf("%s groups by %s, which no metric below it carries", n.Op, l))
				}
			}
		}
		return nil
	})
	return problems
}

// literals matches a regular expression that is only alternatives of plain words.
var literals = regexp.MustCompile(`^[a-zA-Z0-9_:/+.]+(\|[a-zA-Z0-9_:/+.]+)*$`)

// matchedValues returns what matcher m expects that no value in seen gives: each value of an
// equality or of an alternation of words, or the expression itself when no value matches it.
func matchedValues(m *labels.Matcher, seen map[string]bool) []string {
	var missing []string
	if m.Type == labels.MatchEqual || literals.MatchString(m.Value) {
		want := []string{m.Value}
		if m.Type == labels.MatchRegexp {
			want = strings.Split(m.Value, "|")
		}
		for _, v := range want {
			if !seen[v] {
				missing = append(missing, fmt.Sprintf("%q", v))
			}
		}
		return missing
	}
	for v := range seen {
		if m.Matches(v) {
			return nil
		}
	}
	return []string{fmt.Sprintf("any value matching %q", m.Value)}
}

// proxyConfig is a ProxyConfig for the upstream and Redis address: a per-user bucket and a
// shared bucket of maxTokens for the tool "search", under the failure policy.
func proxyConfig(upstream, redis, policy string, maxTokens int) []byte {
	return fmt.Appendf(nil, `apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: tools, name: search}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, timeout: 100ms}
rateLimiting:
  failurePolicy: %s
  perUser: {maxTokens: 100, refillPeriod: 1h}
  tools:
  - name: search
    shared: {maxTokens: %d, refillPeriod: 1h}
`, upstream, redis, policy, maxTokens)
}

// proxy is a proxy running in the test: app.Run, what the binary runs.
type proxy struct {
	t          *testing.T
	base, ops  string
	configPath string
}

func startProxy(t *testing.T, config []byte) *proxy {
	t.Helper()
	p := &proxy{t: t, configPath: filepath.Join(t.TempDir(), "proxy.yaml")}
	if err := os.WriteFile(p.configPath, config, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Settings{
			ConfigPath: p.configPath, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
			ReloadInterval: 50 * time.Millisecond,
			Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready:          func(l, m net.Addr) { ready <- [2]net.Addr{l, m} },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	})
	select {
	case addrs := <-ready:
		p.base, p.ops = "http://"+addrs[0].String(), "http://"+addrs[1].String()
	case err := <-done:
		t.Fatalf("proxy did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not start within 10s")
	}
	return p
}

// call sends a tools/call of "search" as alice to path and returns the status.
func (p *proxy) call(path string) int {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.base+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// metrics scrapes the proxy's /metrics.
func (p *proxy) metrics() map[string]*dto.MetricFamily {
	p.t.Helper()
	resp, err := http.Get(p.ops + "/metrics")
	if err != nil {
		p.t.Fatalf("GET /metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	f, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		p.t.Fatalf("parsing /metrics: %v", err)
	}
	return f
}

// poll scrapes until cond holds.
func (p *proxy) poll(what string, cond func(map[string]*dto.MetricFamily) bool) {
	p.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return cond(p.metrics()), nil
	})
	if err != nil {
		p.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// counter is the value of the child of a counter family whose label has value.
func counter(f map[string]*dto.MetricFamily, name, label, value string) float64 {
	for _, m := range f[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// scrapeProxies runs proxies against a real redis-server and makes them decide, reject,
// refuse a request, reload their config and lose their store under each failure policy, so
// that every labelled counter the rules read has its children; it returns what their
// /metrics serve.
func scrapeProxies(t *testing.T) []map[string]*dto.MetricFamily {
	t.Helper()
	redisSrv := testredis.StartRestartable(t)
	upstreamSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	}))
	t.Cleanup(upstreamSrv.Close)
	upstream := upstreamSrv.URL + "/mcp"

	// failurePolicy Local, on a Redis that goes away.
	local := startProxy(t, proxyConfig(upstream, redisSrv.Addr, "Local", 2))
	// Two calls fit the tool's shared bucket of 2; the third is rejected by it.
	var got []int
	for range 3 {
		got = append(got, local.call("/mcp"))
	}
	if want := []int{200, 200, 429}; !slices.Equal(got, want) {
		t.Fatalf("calls: %v, want %v", got, want)
	}
	if s := local.call("/elsewhere"); s != http.StatusNotFound {
		t.Fatalf("a path that is not the endpoint: %d, want 404", s)
	}
	// A new limit: the proxy reloads its file in place.
	if err := os.WriteFile(local.configPath, proxyConfig(upstream, redisSrv.Addr, "Local", 5), 0o600); err != nil {
		t.Fatal(err)
	}
	local.poll("the reload to apply", func(f map[string]*dto.MetricFamily) bool {
		return counter(f, "tollgate_config_reloads_total", "result", "applied") == 1
	})
	// The dashboard's "Top limited tools" selects bucket=~"tool:.*": the name a tool's
	// bucket has in the metric.
	if got := counter(local.metrics(), "tollgate_rejections_total", "bucket", "tool:search"); got != 1 {
		t.Fatalf(`tollgate_rejections_total{bucket="tool:search"} = %v, want the 1 rejection`, got)
	}
	// The store goes away: the breaker opens and the replica decides with local buckets.
	redisSrv.Stop()
	local.poll("store errors and the breaker to open", func(f map[string]*dto.MetricFamily) bool {
		local.call("/mcp")
		return counter(f, "tollgate_store_errors_total", "kind", "circuit_open") > 0
	})
	out := []map[string]*dto.MetricFamily{local.metrics()}

	// failurePolicy Allow and Deny with no Redis at all: calls fail open, and closed (503).
	for policy, outcome := range map[string]string{"Allow": "fail_open", "Deny": "fail_closed"} {
		p := startProxy(t, proxyConfig(upstream, redisSrv.Addr, policy, 2))
		p.poll(outcome+" decisions", func(f map[string]*dto.MetricFamily) bool {
			p.call("/mcp")
			return counter(f, "tollgate_decisions_total", "outcome", outcome) > 0
		})
		out = append(out, p.metrics())
	}
	return out
}

// operatorMetrics runs the operator's manager (manager.New, what the binary runs) on a real
// API server, lets it reconcile an MCPServer, and returns what controller-runtime's metrics
// registry — the one the operator's /metrics serves — holds then.
func operatorMetrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	env := envtest.Start(t)
	ns := env.Namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := manager.New(ctx, env.AsOperator(t), manager.Options{MetricsAddr: "0", ProbeAddr: "0", ProxyImage: "proxy:test"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	var s v1alpha1.MCPServer
	sample, err := os.ReadFile("../samples/shared.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(sample, &s); err != nil {
		t.Fatal(err)
	}
	s.ObjectMeta = metav1.ObjectMeta{Name: s.Name, Namespace: ns}
	if err := env.Client.Create(ctx, &s); err != nil {
		t.Fatalf("creating the MCPServer: %v", err)
	}
	var families map[string]*dto.MetricFamily
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		mfs, err := crmetrics.Registry.Gather()
		if err != nil {
			return false, err
		}
		families = map[string]*dto.MetricFamily{}
		for _, mf := range mfs {
			families[mf.GetName()] = mf
		}
		// The first reconcile is done: its time is observed.
		return families["controller_runtime_reconcile_time_seconds"].GetMetric() != nil, nil
	})
	if err != nil {
		var names []string
		for n := range families {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Fatalf("waiting for a reconcile to show in the metrics: %v; have %v", err, names)
	}
	return families
}

// TestUnknownNames: the check TestMetricsExist relies on finds what it must, and only that.
func TestUnknownNames(t *testing.T) {
	inv := inventory{
		"tollgate_decisions_total": {
			"method":  {"tools/call": true},
			"outcome": {"allowed": true, "rejected": true},
		},
		"tollgate_rejections_total":                      {"bucket": {"tool:search": true}},
		"tollgate_limiter_check_duration_seconds_bucket": {"le": {"0.005": true, "+Inf": true}},
		"kube_deployment_labels":                         {"deployment": nil},
	}
	cases := map[string]struct {
		reason string
		expr   string
		want   []string
	}{
		"Known": {
			reason: "Known metrics, their labels, target labels and le below a histogram's buckets pass.",
			expr:   `histogram_quantile(0.99, sum by (mcpserver, le) (rate(tollgate_limiter_check_duration_seconds_bucket{job="tollgate-proxy"}[5m]))) + on() group_left sum by (outcome) (tollgate_decisions_total{namespace="a"})`,
		},
		"UnknownMetric": {
			reason: "A metric no binary exposes (a typo, a rename) is reported.",
			expr:   `rate(tollgate_decision_total[5m])`,
			want:   []string{"metric tollgate_decision_total is exposed by neither the proxy nor the operator"},
		},
		"UnknownMatcherLabel": {
			reason: "A matcher on a label the metric lacks would select nothing.",
			expr:   `tollgate_decisions_total{result="applied"}`,
			want:   []string{"tollgate_decisions_total has no label result"},
		},
		"KnownValues": {
			reason: "Values the metric showed, alternatives that all exist, a pattern that matches one, and another exporter's values pass.",
			expr:   `tollgate_decisions_total{outcome="allowed", method=~"tools/call"} + on() group_left tollgate_rejections_total{bucket=~"tool:.*"} + on() group_left kube_deployment_labels{deployment="x"}`,
		},
		"UnknownValue": {
			reason: "An outcome the proxy never reports (a typo of fail_open) would select nothing.",
			expr:   `tollgate_decisions_total{outcome="failopen"}`,
			want:   []string{`tollgate_decisions_total{outcome} never showed "failopen"`},
		},
		"UnknownAlternative": {
			reason: "Each alternative of a|b is checked, not only one of them.",
			expr:   `tollgate_decisions_total{outcome=~"rejected|degraded_rejectd"}`,
			want:   []string{`tollgate_decisions_total{outcome} never showed "degraded_rejectd"`},
		},
		"PatternMatchingNothing": {
			reason: "A pattern no value matches (prompt buckets, when only tools were seen) is reported.",
			expr:   `tollgate_rejections_total{bucket=~"prompt:.*"}`,
			want:   []string{`tollgate_rejections_total{bucket} never showed any value matching "prompt:.*"`},
		},
		"UnknownGroupingLabel": {
			reason: "Grouping by a label none of the metrics below carries yields one empty group.",
			expr:   `sum by (bucket) (tollgate_decisions_total)`,
			want:   []string{"sum groups by bucket, which no metric below it carries"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			expr, err := promQL.ParseExpr(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, unknownNames(inv, expr)); diff != "" {
				t.Errorf("%s\nunknownNames(%s): -want +got:\n%s", tc.reason, tc.expr, diff)
			}
		})
	}
}
