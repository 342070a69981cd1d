package app

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
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgate-dev/tollgate/internal/testoidc"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

const headerConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: app, name: %s}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: memory}
rateLimiting:
  shared: {maxTokens: %d, refillPeriod: 1h}
`

// cfgFor is headerConfig for server name, upstream and a shared bucket of maxTokens per hour.
func cfgFor(name, upstream string, maxTokens int) string {
	return fmt.Sprintf(headerConfig, name, upstream, maxTokens)
}

func postCall(t *testing.T, endpoint string) int {
	t.Helper()
	status, _ := postCallPolicy(t, endpoint)
	return status
}

// postCallPolicy also returns the RateLimit-Policy header: the limits in force.
func postCallPolicy(t *testing.T, endpoint string) (int, string) {
	t.Helper()
	resp, err := http.Post(endpoint, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("RateLimit-Policy")
}

func plainUpstream(t *testing.T, delay time.Duration) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/mcp"
}

// TestReload: a new limit applies without a restart; a broken file leaves the running
// config in force. The memory store (nothing to install) keeps the buckets across reloads.
func TestReload(t *testing.T) {
	up := plainUpstream(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	write := func(s string) {
		// Write then rename, as a ConfigMap volume swaps its files.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(cfgFor("reload", up, 1))
	base, ops := startProxy(t, cfgFor("reload", up, 1), func(s *Settings) {
		s.ConfigPath = path
		s.ReloadInterval = 20 * time.Millisecond
	})
	endpoint := base + "/mcp"
	if got := []int{postCall(t, endpoint), postCall(t, endpoint)}; got[0] != 200 || got[1] != 429 {
		t.Fatalf("shared 1 per hour: want [200 429], got %v", got)
	}
	// 3600 per hour: one token a second. The empty bucket stays empty across the reload
	// (keys do not depend on the config) and refills at the new rate.
	if g := gauge(t, ops, "tollgate_config_generation"); g != 0 {
		t.Errorf("tollgate_config_generation %v for a config without a generation, want 0", g)
	}
	// The operator stamps the MCPServer's generation: the proxy reports the one it enforces.
	write(cfgFor("reload", up, 3600) + "generation: 7\n")
	waitUntil(t, "the new limit to apply", func() bool {
		status, policy := postCallPolicy(t, endpoint)
		return status == 200 && policy == `"shared";q=3600;w=3600`
	})
	if g := gauge(t, ops, "tollgate_config_generation"); g != 7 {
		t.Errorf("tollgate_config_generation %v after the reload, want 7", g)
	}
	write("not: [valid")
	time.Sleep(100 * time.Millisecond)
	if _, policy := postCallPolicy(t, endpoint); policy != `"shared";q=3600;w=3600` {
		t.Errorf("after a broken config the running limits must stay: RateLimit-Policy %q", policy)
	}
	if g := gauge(t, ops, "tollgate_config_generation"); g != 7 {
		t.Errorf("tollgate_config_generation %v after a broken file, want the running config's 7", g)
	}
}

// TestGracefulShutdown: a request in flight when the proxy is told to stop completes.
func TestGracefulShutdown(t *testing.T) {
	up := plainUpstream(t, 300*time.Millisecond)
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(cfgFor("drain", up, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Settings{ConfigPath: path, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func(l, _ net.Addr) { ready <- l }})
	}()
	addr := <-ready
	status := make(chan int, 1)
	go func() { status <- postCall(t, "http://"+addr.String()+"/mcp") }()
	time.Sleep(100 * time.Millisecond) // the request is now waiting on the upstream
	cancel()
	select {
	case s := <-status:
		if s != 200 {
			t.Errorf("in-flight request: want 200, got %d", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request did not complete")
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestLegacySSE: the 2024-11-05 HTTP+SSE transport works through the proxy, and its POSTs
// (to the SSE path with ?sessionid=) are limited like any other.
func TestLegacySSE(t *testing.T) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "legacy", Version: "1.0.0"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
	})
	mux := http.NewServeMux()
	mux.Handle("/sse", mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	base, _ := startProxy(t, cfgFor("legacy", ts.URL+"/sse", 2))
	endpoint := base + "/sse"

	c := mcp.NewClient(&mcp.Implementation{Name: "legacy-client", Version: "1.0.0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, &mcp.SSEClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("legacy SSE connect through the proxy: %v", err)
	}
	defer func() { _ = s.Close() }()
	var errs []error
	for range 3 {
		_, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo"})
		errs = append(errs, err)
	}
	if errs[0] != nil || errs[1] != nil || errs[2] == nil {
		t.Errorf("legacy transport, shared 2: want ok, ok, rejected; got %v", errs)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestPublicURL: behind an ingress that strips a path prefix, the OIDC challenge and the
// protected-resource metadata name the public URL, so that MCP clients find the metadata.
func TestPublicURL(t *testing.T) {
	issuer := testoidc.Start(t)
	up := plainUpstream(t, 0)
	base, _ := startProxy(t, fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: app, name: public}
upstream: {url: %q}
auth: {oidc: {issuer: %q, audience: %q}}
publicURL: https://mcp.example.com/tools
`, up, issuer.URL(), testoidc.Audience))
	resp, err := http.Post(base+"/mcp", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	want := `resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp"`
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(got, want) {
		t.Errorf("challenge %d %q, want 401 with %s", resp.StatusCode, got, want)
	}
	if doc := get(t, base+"/.well-known/oauth-protected-resource/mcp"); !strings.Contains(doc, `"resource":"https://mcp.example.com/tools/mcp"`) {
		t.Errorf("metadata: %s", doc)
	}
}

// TestDenyCacheThroughProxy: a caller hammering a spent bucket is refused by the proxy itself
// after Redis's first refusal: the script runs about once, not once per call (counted in
// Redis), and every refusal is still a 429 with its wait.
func TestDenyCacheThroughProxy(t *testing.T) {
	redisSrv := testredis.Start(t)
	up := plainUpstream(t, 0)
	base, ops := startProxy(t, fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: app, name: deny}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, timeout: 2s}
rateLimiting:
  perUser: {maxTokens: 1, refillPeriod: 1h}
`, up, redisSrv.Addr), func(s *Settings) { s.DenyCacheEntries = DefaultDenyCacheEntries })
	rc := redisSrv.Client(t)
	scriptCalls := func() int {
		stats, err := rc.Info(t.Context(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for line := range strings.SplitSeq(stats, "\n") {
			for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
					var c int
					_, _ = fmt.Sscanf(v, "%d", &c)
					n += c
				}
			}
		}
		return n
	}
	call := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if status, _ := call(); status != http.StatusOK {
		t.Fatalf("the first call: %d", status)
	}
	before := scriptCalls()
	const flood = 50
	for i := range flood {
		if status, retry := call(); status != http.StatusTooManyRequests || retry == "" {
			t.Fatalf("call %d of the flood: %d, Retry-After %q", i, status, retry)
		}
	}
	if n := scriptCalls() - before; n > 2 {
		t.Errorf("%d script calls for %d refused calls: the deny cache did not refuse them", n, flood)
	}
	if got := metricValue(t, ops, "tollgate_deny_cache_rejections_total"); got < flood-2 {
		t.Errorf("tollgate_deny_cache_rejections_total %v, want about %d", got, flood)
	}
}

// TestFailurePolicyLocal: through the proxy binary's wiring on a real redis-server, an outage
// (SIGSTOP, then a kill) hands decisions to the replica's local buckets — limits still hold,
// readiness stays up and says so — and when Redis is back it decides again at once.
func TestFailurePolicyLocal(t *testing.T) {
	redisSrv := testredis.StartRestartable(t)
	up := plainUpstream(t, 0)
	base, ops := startProxy(t, fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: app, name: local}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, timeout: 100ms}
replicas: 2
rateLimiting:
  failurePolicy: Local
  shared: {maxTokens: 6, refillPeriod: 1h}
`, up, redisSrv.Addr))
	if got := postCall(t, base+"/mcp"); got != http.StatusOK {
		t.Fatalf("before the outage: %d", got)
	}
	redisSrv.Stop()
	// Shared 6 divided between 2 replicas: this replica admits 3 on its own.
	var got []int
	for range 5 {
		got = append(got, postCall(t, base+"/mcp"))
	}
	if !slices.Equal(got, []int{200, 200, 200, 429, 429}) {
		t.Errorf("during the outage: %v, want the local share of 3 admitted, then 429", got)
	}
	if r := get(t, ops+"/readyz"); !strings.HasPrefix(r, "ok (degraded") {
		t.Errorf("/readyz during the outage: %q, want ok with the degraded detail", r)
	}
	if g := gauge(t, ops, "tollgate_degraded"); g != 1 {
		t.Errorf("tollgate_degraded %v during the outage", g)
	}
	// Five failed calls in a row opened the breaker (DefaultBreakerFailures): it shows
	// without traffic.
	if g := gauge(t, ops, "tollgate_store_circuit_open"); g != 1 {
		t.Errorf("tollgate_store_circuit_open %v after five failed calls, want 1", g)
	}
	redisSrv.Restart()
	waitUntil(t, "the breaker to close by itself (its background PING), with no call", func() bool {
		return gauge(t, ops, "tollgate_store_circuit_open") == 0
	})
	// Redis decides again: its bucket still holds 5 of 6 (one call before the outage).
	waitUntil(t, "Redis to decide again", func() bool {
		status, policy := postCallPolicy(t, base+"/mcp")
		return status == http.StatusOK && policy != "" && gauge(t, ops, "tollgate_degraded") == 0
	})
	// (The calls that waited for the breaker's next probe were decided locally too.)
	if n := metricValue(t, ops, `tollgate_decisions_total{method="tools/call",outcome="degraded_rejected",tier=""}`); n < 2 {
		t.Errorf("degraded_rejected %v, want at least the 2 above", n)
	}
}
