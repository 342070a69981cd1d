package config

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

const valid = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: default, name: demo}
upstream: {url: "http://127.0.0.1:9000/mcp"}
auth:
  header: {name: X-Forwarded-User}
sessionStorage: {provider: redis, address: "127.0.0.1:6379"}
rateLimiting:
  shared: {maxTokens: 3, refillPeriod: 1m}
  perUser: {maxTokens: 1, refillPeriod: 1m}
`

func TestParse(t *testing.T) {
	cases := map[string]struct {
		reason string
		yaml   string
		want   []string // substrings of the error, each naming a field; nil: valid
	}{
		"Valid":          {reason: "The DESIGN's example config is valid.", yaml: valid},
		"UnknownField":   {reason: "Unknown fields are errors, as with kubectl.", yaml: valid + "bogus: 1\n", want: []string{`unknown field "bogus"`}},
		"WrongKind":      {reason: "The kind is checked.", yaml: strings.Replace(valid, "kind: ProxyConfig", "kind: MCPServer", 1), want: []string{"apiVersion/kind"}},
		"BadNamespace":   {reason: "The server identity goes into Redis keys.", yaml: strings.Replace(valid, "namespace: default", "namespace: Bad_NS", 1), want: []string{"server.namespace"}},
		"BadUpstream":    {reason: "The upstream must be an absolute http(s) URL.", yaml: strings.Replace(valid, "http://127.0.0.1:9000/mcp", "ftp://x/mcp", 1), want: []string{"upstream.url"}},
		"TwoAuth":        {reason: "Exactly one identity source.", yaml: strings.Replace(valid, "  header: {name: X-Forwarded-User}", "  header: {name: X-User}\n  anonymous: {}", 1), want: []string{"auth: set exactly one"}},
		"NoAuth":         {reason: "Exactly one identity source.", yaml: strings.Replace(valid, "  header: {name: X-Forwarded-User}", "  {}", 1), want: []string{"auth: set exactly one"}},
		"PerUserAnon":    {reason: "perUser buckets cannot be keyed without an identity.", yaml: strings.Replace(valid, "  header: {name: X-Forwarded-User}", "  anonymous: {}", 1), want: []string{"rateLimiting: perUser buckets need a caller identity"}},
		"BadBucket":      {reason: "Bucket errors name the bucket.", yaml: strings.Replace(valid, "maxTokens: 3", "maxTokens: 0", 1), want: []string{"rateLimiting: shared bucket: maxTokens must be >= 1"}},
		"BadProvider":    {reason: "The provider is redis or memory.", yaml: strings.Replace(valid, "provider: redis", "provider: etcd", 1), want: []string{"sessionStorage.provider"}},
		"RedisNoAddress": {reason: "redis needs an address.", yaml: strings.Replace(valid, `, address: "127.0.0.1:6379"`, "", 1), want: []string{"sessionStorage.address: provider redis needs address"}},
		"RejectStatus":   {reason: "Only 429 and 200 are offered.", yaml: valid + "responses: {rejectStatus: 503}\n", want: []string{"responses.rejectStatus"}},
		"NotYAML":        {reason: "Garbage is a decoding error.", yaml: "{[", want: []string{"decoding ProxyConfig"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("%s\nParse: %v", tc.reason, err)
				}
				if c.MaxBodyBytes != v1alpha1.DefaultMaxBodyBytes || c.RateLimiting.FailurePolicy != v1alpha1.FailurePolicyAllow || c.SessionStorage.KeyPrefix != "tollgate" {
					t.Errorf("%s\ndefaults not applied: %+v", tc.reason, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s\nParse: want an error", tc.reason)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s\nerror %q does not contain %q", tc.reason, err, w)
				}
			}
		})
	}
}

func TestRestartNeeded(t *testing.T) {
	old, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	limits, _ := Parse([]byte(strings.Replace(valid, "maxTokens: 3", "maxTokens: 30", 1)))
	if got := RestartNeeded(old, limits); len(got) != 0 {
		t.Errorf("a rate-limit change must reload in place, got restart for %v", got)
	}
	upstream, _ := Parse([]byte(strings.Replace(valid, "9000", "9001", 1)))
	if diff := cmp.Diff([]string{"upstream"}, RestartNeeded(old, upstream)); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// TestWatch: a changed file reloads, a broken one is reported and the running config stays,
// a later good one reloads again.
func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(valid)
	var mu sync.Mutex
	var applied []int32
	var errs []error
	go Watch(t.Context(), path, 10*time.Millisecond, func(c *v1alpha1.ProxyConfig) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, c.RateLimiting.Shared.MaxTokens)
	}, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	time.Sleep(30 * time.Millisecond)
	write(strings.Replace(valid, "maxTokens: 3", "maxTokens: 7", 1))
	waitFor("the first reload", func() bool { return len(applied) == 1 })
	write(strings.Replace(valid, "maxTokens: 3", "maxTokens: 0", 1))
	waitFor("the broken file's error", func() bool { return len(errs) == 1 })
	write(strings.Replace(valid, "maxTokens: 3", "maxTokens: 9", 1))
	waitFor("the second reload", func() bool { return len(applied) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]int32{7, 9}, applied); diff != "" {
		t.Errorf("applied configs: -want +got:\n%s", diff)
	}
	if !strings.Contains(errs[0].Error(), "keeping the running config") {
		t.Errorf("error %q does not say the running config stays", errs[0])
	}
}

// TestExampleConfig: the example the README points at stays valid.
func TestExampleConfig(t *testing.T) {
	if _, err := Load("../../docs/examples/proxy.yaml"); err != nil {
		t.Errorf("docs/examples/proxy.yaml: %v", err)
	}
}
