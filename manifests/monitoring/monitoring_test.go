// Package monitoring_test checks the monitoring Component (manifests/monitoring): it builds
// with the pinned kustomize; the PrometheusRule's groups are a valid Prometheus rule file;
// every PromQL expression of the rules and of the Grafana dashboard parses, and every metric
// and label it names exists in a running proxy's or operator's /metrics (metrics_test.go);
// each alert fires on bad synthetic series and stays quiet on healthy ones (alerts_test.go).
// No Prometheus or Grafana runs here: the expressions are checked with Prometheus's own rule
// file parser and PromQL engine (github.com/prometheus/prometheus, test-only).
package monitoring_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

const (
	rulesFile     = "prometheusrule.yaml"
	dashboardFile = "dashboard.json"
	operationsDoc = "../../docs/operations.md"
	// runbookBase is where every alert's runbook_url points, followed by the anchor of the
	// alert's section in docs/operations.md.
	runbookBase = "https://github.com/tollgate-dev/tollgate/blob/main/docs/operations.md#"
)

// promQL parses as Prometheus does by default.
var promQL = parser.NewParser(parser.Options{})

// ruleGroups reads the PrometheusRule and checks its spec as Prometheus checks a rule file:
// unknown fields refused, every expression parsed, every label and annotation template
// parsed. The Prometheus Operator hands spec.groups to Prometheus as such a file.
func ruleGroups(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion string    `yaml:"apiVersion"`
		Kind       string    `yaml:"kind"`
		Spec       yaml.Node `yaml:"spec"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if doc.APIVersion != "monitoring.coreos.com/v1" || doc.Kind != "PrometheusRule" {
		t.Fatalf("%s: %s %s, want a monitoring.coreos.com/v1 PrometheusRule", rulesFile, doc.APIVersion, doc.Kind)
	}
	spec, err := yaml.Marshal(&doc.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promQL, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if len(errs) > 0 {
		t.Fatalf("%s: spec is not a valid Prometheus rule file: %v", rulesFile, errs)
	}
	return groups
}

// alerts are the alerting rules by name.
func alerts(t *testing.T) map[string]rulefmt.Rule {
	t.Helper()
	out := map[string]rulefmt.Rule{}
	for _, g := range ruleGroups(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, dup := out[r.Alert]; dup {
				t.Fatalf("alert %s is defined twice", r.Alert)
			}
			out[r.Alert] = r
		}
	}
	return out
}

// expression is a PromQL expression shipped in a file, and where.
type expression struct {
	where string
	expr  string
}

// ruleExpressions are the expressions of every rule.
func ruleExpressions(t *testing.T) []expression {
	t.Helper()
	var out []expression
	for _, g := range ruleGroups(t).Groups {
		for _, r := range g.Rules {
			out = append(out, expression{where: rulesFile + ": " + g.Name + "/" + r.Alert + r.Record, expr: r.Expr})
		}
	}
	return out
}

// grafanaVariables are the dashboard variables and Grafana's built-in intervals, with a
// value each that makes the query what Grafana would send (an "All" selection is ".*").
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "5m", "$__range", "6h", "$__interval", "1m",
	"$namespace", ".*", "$mcpserver", ".*",
)

// labelValues matches a Grafana variable query, label_values(SELECTOR, LABEL).
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// dashboardExpressions are the expressions of every panel target and every variable query
// of the dashboard, with the variables replaced. A label_values(selector, label) query
// contributes its selector and the label, as `group by (label) (selector)`.
func dashboardExpressions(t *testing.T) []expression {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []expression
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, expression{
				where: fmt.Sprintf("%s: panel %q query %s", dashboardFile, p.Title, tg.RefID),
				expr:  grafanaVariables.Replace(tg.Expr),
			})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, ok := v.Query.(map[string]any)
		if !ok {
			t.Fatalf("%s: variable %s: query is %T, want an object", dashboardFile, v.Name, v.Query)
		}
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("%s: variable %s: %q is not label_values(selector, label)", dashboardFile, v.Name, s)
		}
		out = append(out, expression{
			where: fmt.Sprintf("%s: variable %s", dashboardFile, v.Name),
			expr:  fmt.Sprintf("group by (%s) (%s)", m[2], grafanaVariables.Replace(m[1])),
		})
	}
	return out
}

// TestKustomizeBuild builds the Component with the pinned kustomize (hack/tools/kustomize,
// built into bin/ by `task tools`), alone, as `kustomize build manifests/monitoring` does.
func TestKustomizeBuild(t *testing.T) {
	bin, err := filepath.Abs("../../bin/kustomize")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(bin); err != nil {
		testenv.Missing(t, "kustomize", "task tools (builds the pinned kustomize into bin/)")
	}
	out, err := exec.Command(bin, "build", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("kustomize build: %v\n%s", err, out)
	}
	type object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string            `yaml:"name"`
			Namespace string            `yaml:"namespace"`
			Labels    map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"`
	}
	var got []string
	var dashboard string
	dec := yaml.NewDecoder(strings.NewReader(string(out)))
	for {
		var o object
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kustomize build output: %v", err)
		}
		got = append(got, fmt.Sprintf("%s %s %s/%s", o.APIVersion, o.Kind, o.Metadata.Namespace, o.Metadata.Name))
		if o.Kind == "ConfigMap" && o.Metadata.Labels["grafana_dashboard"] == "1" {
			dashboard = o.Data["tollgate.json"]
		}
	}
	want := []string{
		"v1 ConfigMap tollgate-system/tollgate-dashboard",
		"monitoring.coreos.com/v1 PodMonitor tollgate-system/tollgate-operator",
		"monitoring.coreos.com/v1 PodMonitor tollgate-system/tollgate-proxy",
		"monitoring.coreos.com/v1 PrometheusRule tollgate-system/tollgate",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("objects in the build, in kustomize's order: -want +got:\n%s", diff)
	}
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if dashboard != string(raw) {
		t.Errorf("the ConfigMap labelled grafana_dashboard=1 does not hold %s as key tollgate.json", dashboardFile)
	}
}

// TestRuleFile: the PrometheusRule is a valid rule file, and every alert carries what the
// receiving end needs: a severity, a summary and a runbook_url whose anchor is a section of
// docs/operations.md.
func TestRuleFile(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(line, "### "); ok {
			anchors[githubAnchor(h)] = true
		}
	}
	severities := []string{"critical", "warning", "info"}
	for name, r := range alerts(t) {
		t.Run(name, func(t *testing.T) {
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("severity %q, want one of %v", r.Labels["severity"], severities)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("summary %q, description %q: want both", r.Annotations["summary"], r.Annotations["description"])
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
			if !ok {
				t.Fatalf("runbook_url %q does not start with %s", r.Annotations["runbook_url"], runbookBase)
			}
			if want := strings.ToLower(name); anchor != want {
				t.Errorf("runbook_url anchor %q, want %q (the alert's own section)", anchor, want)
			}
			if !anchors[anchor] {
				t.Errorf("docs/operations.md has no section (### heading) with anchor %q", anchor)
			}
		})
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestExpressionsParse: every expression of the rules and the dashboard is valid PromQL.
func TestExpressionsParse(t *testing.T) {
	exprs := append(ruleExpressions(t), dashboardExpressions(t)...)
	for _, e := range exprs {
		if _, err := promQL.ParseExpr(e.expr); err != nil {
			t.Errorf("%s: %v\n%s", e.where, err, e.expr)
		}
		if strings.Contains(e.expr, "$") {
			t.Errorf("%s: a Grafana variable the test does not know is left: %s", e.where, e.expr)
		}
	}
	if len(exprs) < 20 {
		t.Errorf("only %d expressions found: the files' structure changed?", len(exprs))
	}
}

// TestDashboardLayout checks what Grafana would otherwise show wrong without complaint: panel
// ids are unique, panels fit the 24-column grid without overlapping, every query uses the
// dashboard's data source variable, and the JSON stays small enough for `kubectl apply`
// (client-side apply copies it into an annotation limited to 256 KiB).
func TestDashboardLayout(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 200<<10 {
		t.Errorf("%s is %d bytes: keep it well under the 256 KiB of kubectl's last-applied annotation", dashboardFile, len(data))
	}
	type source struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID         int     `json:"id"`
			Title      string  `json:"title"`
			Type       string  `json:"type"`
			Datasource *source `json:"datasource"`
			GridPos    struct {
				H, W, X, Y int
			} `json:"gridPos"`
			Targets []struct {
				RefID      string  `json:"refId"`
				Datasource *source `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID != "tollgate" {
		t.Errorf("uid %q, want tollgate (links and provisioning rely on a fixed uid)", d.UID)
	}
	want := source{Type: "prometheus", UID: "${datasource}"}
	ids := map[int]string{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v does not fit the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, taken := cells[[2]int{x, y}]; taken {
					t.Fatalf("panels %q and %q overlap at column %d, row %d", other, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || *p.Datasource != want {
			t.Errorf("panel %q: datasource %v, want %v", p.Title, p.Datasource, want)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || *tg.Datasource != want {
				t.Errorf("panel %q query %s: datasource %v, want %v", p.Title, tg.RefID, tg.Datasource, want)
			}
		}
	}
}
