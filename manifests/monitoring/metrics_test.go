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
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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

// inventory is the label names of every metric a source exposes, by metric name (a
// histogram as its _bucket, _sum and _count series).
type inventory map[string]map[string]bool

// add records the metric families of one source.
func (inv inventory) add(families map[string]*dto.MetricFamily) {
	for name, mf := range families {
		series := map[string][]string{name: nil}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			series = map[string][]string{name + "_bucket": {"le"}, name + "_sum": nil, name + "_count": nil}
		case dto.MetricType_SUMMARY:
			series = map[string][]string{name: {"quantile"}, name + "_sum": nil, name + "_count": nil}
		}
		for s, extra := range series {
			if inv[s] == nil {
				inv[s] = map[string]bool{}
			}
			for _, l := range extra {
				inv[s][l] = true
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					inv[s][lp.GetName()] = true
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
	"kube_deployment_spec_replicas": {"deployment": true},
	"kube_deployment_status_replicas_available": {"deployment": true},
	"kube_deployment_labels":                    {"deployment": true, "label_app_kubernetes_io_managed_by": true},
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
	inv.add(scrapeProxy(t))
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

// unknownNames lists the metrics expr selects that inv lacks, the labels its selectors match
// on that the metric lacks, and the labels its aggregations group by that none of the
// metrics below them carries.
func unknownNames(inv inventory, expr parser.Expr) []string {
	var problems []string
	has := func(labels map[string]bool, l string) bool {
		return labels[l] || slices.Contains(targetLabels, l)
	}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			labels, ok := inv[n.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %s is exposed by neither the proxy nor the operator", n.Name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel && !has(labels, m.Name) {
					problems = append(problems, fmt.Sprintf("%s has no label %s", n.Name, m.Name))
				}
			}
		case *parser.AggregateExpr:
			below := map[string]bool{}
			parser.Inspect(n.Expr, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok {
					for l := range inv[vs.Name] {
						below[l] = true
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

// scrapeProxy runs the proxy (app.Run, what the binary runs) against a real redis-server,
// makes it decide, reject, refuse, reload and lose its store, so that every labelled
// counter has a child, and returns what its /metrics serves.
func scrapeProxy(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	redisSrv := testredis.StartRestartable(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	}))
	t.Cleanup(upstream.Close)
	config := func(maxTokens int) []byte {
		return fmt.Appendf(nil, `apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: tools, name: search}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, timeout: 100ms}
rateLimiting:
  failurePolicy: Local
  perUser: {maxTokens: 100, refillPeriod: 1h}
  tools:
  - name: search
    shared: {maxTokens: %d, refillPeriod: 1h}
`, upstream.URL+"/mcp", redisSrv.Addr, maxTokens)
	}
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, config(2), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Settings{
			ConfigPath: path, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
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
	var base, ops string
	select {
	case addrs := <-ready:
		base, ops = "http://"+addrs[0].String(), "http://"+addrs[1].String()
	case err := <-done:
		t.Fatalf("proxy did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not start within 10s")
	}

	call := func(path string) int {
		req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	// Two calls fit the tool's shared bucket of 2; the third is rejected by it.
	var got []int
	for range 3 {
		got = append(got, call("/mcp"))
	}
	if want := []int{200, 200, 429}; !slices.Equal(got, want) {
		t.Fatalf("calls: %v, want %v", got, want)
	}
	if s := call("/elsewhere"); s != http.StatusNotFound {
		t.Fatalf("a path that is not the endpoint: %d, want 404", s)
	}
	// A new limit: the proxy reloads its file in place.
	if err := os.WriteFile(path, config(5), 0o600); err != nil {
		t.Fatal(err)
	}
	families := func() map[string]*dto.MetricFamily {
		resp, err := http.Get(ops + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer func() { _ = resp.Body.Close() }()
		p := expfmt.NewTextParser(model.UTF8Validation)
		f, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("parsing /metrics: %v", err)
		}
		return f
	}
	counter := func(f map[string]*dto.MetricFamily, name, label, value string) float64 {
		for _, m := range f[name].GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	poll := func(what string, cond func(map[string]*dto.MetricFamily) bool) {
		err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
			return cond(families()), nil
		})
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
	poll("the reload to apply", func(f map[string]*dto.MetricFamily) bool {
		return counter(f, "tollgate_config_reloads_total", "result", "applied") == 1
	})
	// The dashboard's "Top limited tools" selects bucket=~"tool:.*": the name a tool's
	// bucket has in the metric.
	if got := counter(families(), "tollgate_rejections_total", "bucket", "tool:search"); got != 1 {
		t.Fatalf(`tollgate_rejections_total{bucket="tool:search"} = %v, want the 1 rejection`, got)
	}
	// The store goes away: the breaker opens and the replica decides with local buckets.
	redisSrv.Stop()
	poll("store errors and the breaker to open", func(f map[string]*dto.MetricFamily) bool {
		call("/mcp")
		return counter(f, "tollgate_store_errors_total", "kind", "circuit_open") > 0
	})
	return families()
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
		"tollgate_decisions_total":                       {"method": true, "outcome": true},
		"tollgate_limiter_check_duration_seconds_bucket": {"le": true},
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
