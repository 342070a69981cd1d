package manifest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tollgate-dev/tollgate/operator/admission"
)

func validator(t *testing.T) *admission.Validator {
	t.Helper()
	v, err := admission.New()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestValidate(t *testing.T) {
	v := validator(t)
	cases := map[string]struct {
		reason  string
		paths   []string
		want    []string
		servers int
	}{
		"Samples": {
			reason: "Every shipped sample is valid.", paths: []string{"../../manifests/samples"}, servers: 5,
		},
		"Invalid": {
			reason: "Admission (CEL) errors, the operator's semantic errors and what the proxy would refuse of the rendered config (a referenced ConfigMap's value), each with file, document and field; ConfigMaps are not checked themselves.",
			paths:  []string{"testdata/invalid.yaml"}, servers: 3,
			want: []string{
				"testdata/invalid.yaml:1: spec.rateLimiting.perUser: Invalid value: rateLimiting.perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",
				"testdata/invalid.yaml:3: spec.rateLimiting: tool \"heavy\": cost 5 exceeds the server shared bucket's maxTokens 3: no call could ever be admitted",
				"testdata/invalid.yaml:5: <rendered>: the proxy would refuse its config: auth.header.trustedProxies[0] \"10.0.0.0/33\": not a CIDR",
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			docs, err := Read(tc.paths)
			if err != nil {
				t.Fatal(err)
			}
			// The problems are compared as text: `operator validate` prints them so.
			probs, n := Validate(v, docs)
			var got []string
			for _, p := range probs {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" || n != tc.servers {
				t.Errorf("%s\n%d servers (want %d); problems -want +got:\n%s", tc.reason, n, tc.servers, diff)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	v := validator(t)
	docs, err := Read([]string{"../../manifests/samples"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Plan(v, docs, "proxy:test", &out); err != nil {
		t.Fatalf("Plan: %v", err)
	}
	for _, want := range []string{
		"# MCPServer tools/research", "kind: NetworkPolicy", "app: auth-gateway",
		"# MCPServer tools/search-per-user", "issuer: https://login.example.com",
		"kind: Deployment", "kind: Service", "image: proxy:test",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan lacks %q", want)
		}
	}
}

func TestPlanMissingConfigMap(t *testing.T) {
	v := validator(t)
	only, err := Read([]string{"../../manifests/samples/per-tool.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	var mcps []Document
	for _, d := range only {
		if d.isMCPServer() {
			mcps = append(mcps, d)
		}
	}
	reason := "A reference to a ConfigMap that is not among the manifests is reported, naming it."
	err = Plan(v, mcps, "proxy:test", &bytes.Buffer{})
	var want error = ConfigMapNotFoundError{Namespace: "tools", Name: "gateway"}
	if diff := cmp.Diff(want, err, cmpopts.EquateErrors()); diff != "" {
		t.Errorf("%s\nPlan(...): -want error, +got error:\n%s", reason, diff)
	}
}
