package render

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func server(mut func(*v1alpha1.MCPServerSpec)) *v1alpha1.MCPServer {
	s := &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "search", Namespace: "tools"},
		Spec: v1alpha1.MCPServerSpec{
			Upstream:       v1alpha1.UpstreamSpec{URL: "http://search.tools.svc:9000/mcp"},
			SessionStorage: &v1alpha1.SessionStorageConfig{Provider: v1alpha1.SessionStorageRedis, Address: "redis.tollgate.svc:6379", KeyPrefix: "tollgate"},
			RateLimiting: &v1alpha1.RateLimitConfig{
				Shared: &v1alpha1.RateLimitBucket{MaxTokens: 100, RefillPeriod: metav1.Duration{Duration: time.Minute}},
			},
		},
	}
	if mut != nil {
		mut(&s.Spec)
	}
	return s
}

// TestRenderGolden renders one MCPServer per shape and compares with testdata/<case>.yaml
// (go test ./operator/render -update rewrites them).
func TestRenderGolden(t *testing.T) {
	perUser := &v1alpha1.RateLimitBucket{MaxTokens: 10, RefillPeriod: metav1.Duration{Duration: time.Minute}}
	replicas := int32(3)
	cases := map[string]Inputs{
		"shared-redis": {Server: server(nil), ProxyImage: "ghcr.io/tollgate-dev/proxy:v0.1.0"},
		"oidc-per-user": {
			Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"}
				s.RateLimiting.PerUser = perUser
				s.Proxy = &v1alpha1.ProxySpec{Replicas: &replicas}
			}),
			OIDC:       &v1alpha1.OIDCConfig{Issuer: "https://login.example.com", Audience: "mcp-search", UserClaim: "email"},
			ProxyImage: "ghcr.io/tollgate-dev/proxy:v0.1.0",
		},
		"header-networkpolicy": {
			Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.ExternalAuthConfigRef = &v1alpha1.ConfigMapReference{Name: "gateway"}
				s.RateLimiting.Tools = []v1alpha1.ToolRateLimitConfig{{Name: "web_search", PerUser: perUser, Cost: 2}}
			}),
			ExternalAuth: &ExternalAuth{UserHeader: "X-Forwarded-User", TrustedProxies: []string{"10.0.0.0/8"}},
			ProxyImage:   "ghcr.io/tollgate-dev/proxy:v0.1.0",
		},
		"oidc-tiers-tool-result": {
			Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"}
				s.RateLimiting.PerUser = perUser
				s.RateLimiting.Tiers = []v1alpha1.RateLimitTier{
					{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro", "enterprise"}}, PerUser: &v1alpha1.RateLimitBucket{MaxTokens: 100, RefillPeriod: metav1.Duration{Duration: time.Minute}},
						Tools: []v1alpha1.TierToolLimit{{Name: "web_search", PerUser: v1alpha1.RateLimitBucket{MaxTokens: 20, RefillPeriod: metav1.Duration{Duration: time.Minute}}}}},
					{Name: "staff", Match: v1alpha1.TierMatch{Claim: "groups", Values: []string{"sre"}}, Unlimited: true},
				}
				s.Proxy = &v1alpha1.ProxySpec{Responses: &v1alpha1.ProxyResponses{ToolRejection: v1alpha1.ToolRejectionToolResult}}
			}),
			OIDC:       &v1alpha1.OIDCConfig{Issuer: "https://login.example.com", Audience: "mcp-search"},
			ProxyImage: "ghcr.io/tollgate-dev/proxy:v0.1.0",
		},
		"redis-secrets-tls": {
			Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage.PasswordRef = &v1alpha1.SecretKeyReference{Name: "redis", Key: "password"}
				s.SessionStorage.UsernameRef = &v1alpha1.SecretKeyReference{Name: "redis", Key: "username"}
				s.SessionStorage.TLS = &v1alpha1.RedisTLSConfig{CACertRef: &v1alpha1.SecretKeyReference{Name: "redis-ca", Key: "ca.crt"}, ServerName: "redis.internal"}
				s.Proxy = &v1alpha1.ProxySpec{Image: "registry.local/proxy:dev"}
			}),
			ProxyImage: "ghcr.io/tollgate-dev/proxy:v0.1.0",
		},
		"user-hash-key-ref": {
			Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage.UserHashKeyRef = &v1alpha1.SecretKeyReference{Name: "shared-pseudonyms", Key: "key"}
			}),
			ProxyImage:     "ghcr.io/tollgate-dev/proxy:v0.1.0",
			UserHashKeyUID: "0b8a2c1e-5d1f-4d0e-9a57-6f4c1d2e3b4a",
		},
		"memory": {
			Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage = &v1alpha1.SessionStorageConfig{Provider: v1alpha1.SessionStorageMemory}
			}),
			ProxyImage: "ghcr.io/tollgate-dev/proxy:v0.1.0",
		},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			objs, err := Render(in)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			list := []any{objs.ConfigMap, objs.Deployment, objs.Service}
			if objs.NetworkPolicy != nil {
				list = append(list, objs.NetworkPolicy)
			}
			var got []byte
			for _, o := range list {
				b, err := yaml.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				got = append(append(got, "---\n"...), b...)
			}
			path := filepath.Join("testdata", name+".yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("golden file (run with -update to create): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s: -want +got:\n%s", path, diff)
			}
		})
	}
}

// TestConfigHash: the pods roll for what the proxy cannot reload, and only for that.
func TestConfigHash(t *testing.T) {
	hashOf := func(s *v1alpha1.MCPServer) string {
		objs, err := Render(Inputs{Server: s, ProxyImage: "img"})
		if err != nil {
			t.Fatal(err)
		}
		return objs.Deployment.Spec.Template.Annotations[ConfigHashAnnotation]
	}
	base := hashOf(server(nil))
	cases := map[string]struct {
		reason string
		mut    func(*v1alpha1.MCPServerSpec)
		roll   bool
	}{
		"RateLimits": {"Rate limits reload in place: no roll (it would cut SSE streams).", func(s *v1alpha1.MCPServerSpec) {
			s.RateLimiting.Shared.MaxTokens = 5
			s.RateLimiting.Mode = v1alpha1.RateLimitModeShadow
		}, false},
		"Upstream":   {"A new upstream needs a restart.", func(s *v1alpha1.MCPServerSpec) { s.Upstream.URL = "http://other:9000/mcp" }, true},
		"Store":      {"A new store needs a restart.", func(s *v1alpha1.MCPServerSpec) { s.SessionStorage.Address = "redis-2:6379" }, true},
		"KeyPrefix":  {"A new key prefix is a new store layout.", func(s *v1alpha1.MCPServerSpec) { s.SessionStorage.KeyPrefix = "b" }, true},
		"ProxyImage": {"Image changes roll pods by themselves (the template changes), not through the hash.", func(s *v1alpha1.MCPServerSpec) { s.Proxy = &v1alpha1.ProxySpec{Image: "x"} }, false},
		"PassthroughPaths": {"The routes are built once: a new pass-through path needs a restart (the proxy refuses to reload it).", func(s *v1alpha1.MCPServerSpec) {
			s.Upstream.PassthroughPaths = []v1alpha1.PassthroughPath{{Path: "/healthz"}}
		}, true},
		"HTTPBounds": {"So do the HTTP bounds.", func(s *v1alpha1.MCPServerSpec) {
			s.Proxy = &v1alpha1.ProxySpec{HTTP: &v1alpha1.HTTPServerConfig{MaxStreams: 100}}
		}, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if rolled := hashOf(server(tc.mut)) != base; rolled != tc.roll {
				t.Errorf("%s\nhash changed: %v, want %v", tc.reason, rolled, tc.roll)
			}
		})
	}
}

// TestProxyConfigHTTP: the MCPServer's upstream paths and HTTP bounds reach the proxy's config.
func TestProxyConfigHTTP(t *testing.T) {
	s := server(func(s *v1alpha1.MCPServerSpec) {
		s.Upstream.LegacySSEPaths = []string{"/messages"}
		s.Upstream.PassthroughPaths = []v1alpha1.PassthroughPath{{Path: "/static", PathType: v1alpha1.PathTypePrefix}}
		s.Proxy = &v1alpha1.ProxySpec{HTTP: &v1alpha1.HTTPServerConfig{MaxStreams: 10, MaxStreamsPerCaller: 2}}
	})
	pc := ProxyConfig(Inputs{Server: s})
	if diff := cmp.Diff(s.Spec.Upstream, pc.Upstream); diff != "" {
		t.Errorf("upstream: -want +got:\n%s", diff)
	}
	if diff := cmp.Diff(s.Spec.Proxy.HTTP, pc.HTTP); diff != "" {
		t.Errorf("http: -want +got:\n%s", diff)
	}
}

func TestURL(t *testing.T) {
	if diff := cmp.Diff("http://search-proxy.tools.svc:8080/mcp", URL(server(nil))); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// TestRenderRefuses: what the proxy or the API server would refuse is never rendered; the
// error is an *InvalidError naming the field.
func TestRenderRefuses(t *testing.T) {
	cases := map[string]struct {
		reason string
		in     Inputs
		want   string // in the error
	}{
		"DottedName": {"A Service name cannot hold a dot.",
			Inputs{Server: func() *v1alpha1.MCPServer { s := server(nil); s.Name = "a.b"; return s }()}, `metadata.name "a.b"`},
		"LongName": {"Nor be longer than 63 characters with the -proxy suffix.",
			Inputs{Server: func() *v1alpha1.MCPServer { s := server(nil); s.Name = strings.Repeat("a", 58); return s }()}, "must be no more than 63 characters"},
		"TrustedProxiesNotACIDR": {"A referenced ConfigMap's trustedProxies reach the proxy's config: a bad CIDR is refused here.",
			Inputs{Server: server(nil), ExternalAuth: &ExternalAuth{UserHeader: "X-User", TrustedProxies: []string{"10.0.0.0/33"}}}, `auth.header.trustedProxies[0] "10.0.0.0/33": not a CIDR`},
		"HeaderName": {"A header name the proxy cannot read.",
			Inputs{Server: server(nil), ExternalAuth: &ExternalAuth{UserHeader: "X User"}}, `auth.header.name "X User": not a valid HTTP header name`},
		"OIDCIssuer": {"A referenced OIDC issuer that is not a URL.",
			Inputs{Server: server(nil), OIDC: &v1alpha1.OIDCConfig{Issuer: "login", Audience: "a"}}, `auth.oidc.issuer "login": must be an absolute http or https URL`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Render(tc.in)
			var invalid *InvalidError
			if !errors.As(err, &invalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s\nRender: %v, want an *InvalidError containing %q", tc.reason, err, tc.want)
			}
		})
	}
	if _, err := Render(Inputs{Server: server(nil)}); err != nil {
		t.Errorf("a valid server: %v", err)
	}
}

// TestUserHashKey checks that a rendered proxy with buckets always reads a managed key (never
// its per-process one, never the library's fixed one), from the Secret the spec says, and that
// the pod template names that Secret's UID (a replaced Secret rolls every replica together).
func TestUserHashKey(t *testing.T) {
	type want struct {
		file       string
		secret     string
		key        string
		annotation string
	}
	cases := map[string]struct {
		reason string
		in     Inputs
		want   want
	}{
		"Managed": {
			reason: "without userHashKeyRef the operator's own Secret is mounted",
			in:     Inputs{Server: server(nil), UserHashKeyUID: "uid-1"},
			want:   want{file: UserHashKeyFile, secret: "search-proxy-userhash", key: UserHashKeySecretKey, annotation: "uid-1"},
		},
		"Referenced": {
			reason: "userHashKeyRef names the Secret and key mounted",
			in: Inputs{Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage.UserHashKeyRef = &v1alpha1.SecretKeyReference{Name: "pseudonyms", Key: "k"}
			}), UserHashKeyUID: "uid-2"},
			want: want{file: UserHashKeyFile, secret: "pseudonyms", key: "k", annotation: "uid-2"},
		},
		"Memory": {
			reason: "the memory store keys its pseudonyms (logs) with a managed key too",
			in: Inputs{Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage = &v1alpha1.SessionStorageConfig{Provider: v1alpha1.SessionStorageMemory}
			}), UserHashKeyUID: "uid-3"},
			want: want{file: UserHashKeyFile, secret: "search-proxy-userhash", key: UserHashKeySecretKey, annotation: "uid-3"},
		},
		"Plan": {
			reason: "offline (operator plan) there is no UID: the key is mounted, the annotation left out",
			in:     Inputs{Server: server(nil)},
			want:   want{file: UserHashKeyFile, secret: "search-proxy-userhash", key: UserHashKeySecretKey},
		},
		"NoSessionStorage": {
			reason: "no buckets: no key to mount",
			in: Inputs{Server: server(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage, s.RateLimiting = nil, nil
			})},
			want: want{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			objs, err := Render(tc.in)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			var pc v1alpha1.ProxyConfig
			if err := yaml.Unmarshal([]byte(objs.ConfigMap.Data[ConfigKey]), &pc); err != nil {
				t.Fatal(err)
			}
			var got want
			if pc.SessionStorage != nil {
				got.file = pc.SessionStorage.UserHashKeyFile
			}
			tpl := objs.Deployment.Spec.Template
			got.annotation = tpl.Annotations[UserHashKeyAnnotation]
			for _, v := range tpl.Spec.Volumes {
				if v.Name == "user-hash-key" {
					src := v.Projected.Sources[0].Secret
					got.secret, got.key = src.Name, src.Items[0].Key
				}
			}
			for _, m := range tpl.Spec.Containers[0].VolumeMounts {
				if m.Name == "user-hash-key" && m.MountPath+"/key" != got.file {
					t.Errorf("mounted at %s, but the config reads %s", m.MountPath, got.file)
				}
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("%s: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestUserHashKeySecret checks the Secret the operator creates: immutable, the key
// hex-encoded (no byte the proxy would trim), named after the server.
func TestUserHashKeySecret(t *testing.T) {
	key := []byte{0x0a, 0x0d, 0xff, 0x00}
	sec := UserHashKeySecret(server(nil), key)
	got := map[string]any{"name": sec.Name, "namespace": sec.Namespace, "immutable": *sec.Immutable, "data": string(sec.Data[UserHashKeySecretKey])}
	want := map[string]any{"name": "search-proxy-userhash", "namespace": "tools", "immutable": true, "data": "0a0dff00"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}
