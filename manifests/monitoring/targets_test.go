package monitoring_test

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// podMonitor is the part of a monitoring.coreos.com/v1 PodMonitor that decides what is scraped.
type podMonitor struct {
	Spec struct {
		NamespaceSelector struct {
			Any bool `json:"any"`
		} `json:"namespaceSelector"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
				Replacement  *string  `json:"replacement"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// scraped is what a PodMonitor makes of a pod: whether it selects it, the port it scrapes
// (with the container that declares it) and the target labels its relabelings set.
type scraped struct {
	// AllNamespaces: pods of every namespace (a proxy runs beside its MCPServer), or only
	// the PodMonitor's own.
	AllNamespaces bool
	Selected      bool
	Container     string
	Port          int32
	Path          string
	Labels        map[string]string
}

// scrape applies a PodMonitor to a pod template as Prometheus's pod discovery would:
// __meta_kubernetes_pod_label_<name> holds each pod label, with the name sanitised.
func scrape(t *testing.T, file string, pod corev1.PodTemplateSpec) scraped {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pm podMonitor
	// The PodMonitor has fields this struct leaves out (metadata, interval): decode leniently.
	if err := yaml.Unmarshal(data, &pm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	got := scraped{AllNamespaces: pm.Spec.NamespaceSelector.Any, Selected: true, Labels: map[string]string{}}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v {
			got.Selected = false
		}
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%s: %d endpoints, want 1", file, len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	got.Path = ep.Path
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == ep.Port {
				got.Container, got.Port = c.Name, p.ContainerPort
			}
		}
	}
	meta := map[string]string{}
	for k, v := range pod.Labels {
		meta["__meta_kubernetes_pod_label_"+strings.NewReplacer(".", "_", "/", "_", "-", "_").Replace(k)] = v
	}
	for _, r := range ep.Relabelings {
		switch {
		case r.Replacement != nil:
			got.Labels[r.TargetLabel] = *r.Replacement
		case len(r.SourceLabels) == 1:
			got.Labels[r.TargetLabel] = meta[r.SourceLabels[0]]
		default:
			t.Fatalf("%s: a relabeling this test does not model: %+v", file, r)
		}
	}
	return got
}

// TestPodMonitorsSelect: the PodMonitors select the pods the operator renders for a proxy and
// the operator's own pods, scrape the port that serves /metrics, and give the series the
// labels the alerts and the dashboard group by.
func TestPodMonitorsSelect(t *testing.T) {
	var s v1alpha1.MCPServer
	sample, err := os.ReadFile("../samples/shared.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(sample, &s); err != nil {
		t.Fatal(err)
	}
	objs, err := render.Render(render.Inputs{Server: &s, ProxyImage: "proxy:test"})
	if err != nil {
		t.Fatalf("rendering %s/%s: %v", s.Namespace, s.Name, err)
	}
	var operator appsv1.Deployment
	data, err := os.ReadFile("../operator/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &operator); err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(operator.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--metrics-bind-address=:8080") {
		t.Fatalf("the operator Deployment's args %q: want --metrics-bind-address=:8080, the port named metrics", args)
	}
	cases := map[string]struct {
		reason string
		file   string
		pod    corev1.PodTemplateSpec
		want   scraped
	}{
		"Proxy": {
			reason: "Every proxy the operator renders is selected, scraped on port 9090 (--metrics-listen) and labelled with its MCPServer.",
			file:   "podmonitor-proxy.yaml",
			pod:    objs.Deployment.Spec.Template,
			want: scraped{AllNamespaces: true, Selected: true, Container: "proxy", Port: render.MetricsPort, Path: "/metrics",
				Labels: map[string]string{"job": "tollgate-proxy", "mcpserver": s.Name}},
		},
		"Operator": {
			reason: "The operator's pods are selected and scraped on its metrics port.",
			file:   "podmonitor-operator.yaml",
			pod:    operator.Spec.Template,
			want:   scraped{Selected: true, Container: "operator", Port: 8080, Path: "/metrics", Labels: map[string]string{"job": "tollgate-operator"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, scrape(t, tc.file, tc.pod)); diff != "" {
				t.Errorf("%s\n%s: -want +got:\n%s", tc.reason, tc.file, diff)
			}
		})
	}
	// The proxy's PodMonitor must not pick up the operator (nor the other way round).
	if scrape(t, "podmonitor-proxy.yaml", operator.Spec.Template).Selected || scrape(t, "podmonitor-operator.yaml", objs.Deployment.Spec.Template).Selected {
		t.Error("a PodMonitor selects the other component's pods")
	}
}
