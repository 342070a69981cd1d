package auth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

func TestMetadataHandler(t *testing.T) {
	cfg := v1alpha1.OIDCConfig{Issuer: "https://issuer.example.com", Audience: "tollgate"}
	type args struct {
		resource string
		method   string
		target   string
		header   http.Header
	}
	type want struct {
		status  int
		headers map[string]string // a subset of the response headers
		body    string
	}
	cases := map[string]struct {
		reason string
		args   args
		want   want
	}{
		"Explicit": {
			reason: "A given resource is served verbatim with the issuer as authorization server.",
			args:   args{resource: "https://mcp.example.com/mcp", method: http.MethodGet, target: "http://10.0.0.7/.well-known/oauth-protected-resource/mcp"},
			want: want{
				status:  http.StatusOK,
				headers: map[string]string{"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"},
				body:    `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://issuer.example.com"],"bearer_methods_supported":["header"]}` + "\n",
			},
		},
		"Derived": {
			reason: "With no resource it is the request's scheme and host and the path after the well-known prefix.",
			args: args{method: http.MethodGet, target: "http://mcp.example.com/.well-known/oauth-protected-resource/v1/mcp",
				header: http.Header{"X-Forwarded-Proto": {"https"}}},
			want: want{
				status:  http.StatusOK,
				headers: map[string]string{"Content-Type": "application/json"},
				body:    `{"resource":"https://mcp.example.com/v1/mcp","authorization_servers":["https://issuer.example.com"],"bearer_methods_supported":["header"]}` + "\n",
			},
		},
		"Head": {
			reason: "HEAD gets the headers and no body.",
			args:   args{resource: "https://mcp.example.com/mcp", method: http.MethodHead, target: "http://mcp.example.com/.well-known/oauth-protected-resource/mcp"},
			want:   want{status: http.StatusOK, headers: map[string]string{"Content-Type": "application/json"}},
		},
		"Preflight": {
			reason: "A CORS preflight is answered so browser-based MCP clients can fetch the document.",
			args:   args{method: http.MethodOptions, target: "http://mcp.example.com/.well-known/oauth-protected-resource/mcp"},
			want: want{status: http.StatusNoContent, headers: map[string]string{
				"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
			}},
		},
		"Post": {
			reason: "Other methods are refused.",
			args:   args{method: http.MethodPost, target: "http://mcp.example.com/.well-known/oauth-protected-resource/mcp"},
			want:   want{status: http.StatusMethodNotAllowed, headers: map[string]string{"Allow": "GET, HEAD, OPTIONS"}, body: "method not allowed\n"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(tc.args.method, tc.args.target, nil)
			for k, v := range tc.args.header {
				r.Header[k] = v
			}
			w := httptest.NewRecorder()
			MetadataHandler(cfg, tc.args.resource).ServeHTTP(w, r)
			resp := w.Result()
			body, _ := io.ReadAll(resp.Body)
			got := want{status: resp.StatusCode, headers: map[string]string{}, body: string(body)}
			for k := range tc.want.headers {
				got.headers[k] = resp.Header.Get(k)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("%s\nServeHTTP(...): -want, +got:\n%s", tc.reason, diff)
			}
		})
	}
}
