package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgate-dev/tollgate/internal/testoidc"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// startUpstream serves a real go-sdk MCP server with tools, a prompt and a resource on
// 127.0.0.1. stateless serves 2026-07-28 (the SDK serves it only when stateless); stateful
// tops out at 2025-11-25, with sessions and SSE answers.
func startUpstream(t *testing.T, stateless bool) string {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1.0.0"}, nil)
	type echoIn struct {
		Text string `json:"text"`
	}
	for _, name := range []string{"echo", "search", "nd"} {
		mcp.AddTool(srv, &mcp.Tool{Name: name, Description: name}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + ":" + in.Text}}}, nil, nil
		})
	}
	srv.AddPrompt(&mcp.Prompt{Name: "summary"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "summarise"}}}}, nil
	})
	srv.AddResource(&mcp.Resource{URI: "file:///motd", Name: "motd", MIMEType: "text/plain"}, func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: "hello"}}}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: stateless})
	mux := http.NewServeMux()
	mux.Handle("/mcp", h)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL + "/mcp"
}

// startProxy runs the whole proxy (app.Run) with config on loopback ports and returns its
// base URL and its metrics base URL. It stops when the test ends.
func startProxy(t *testing.T, config string, tweak ...func(*Settings)) (base, ops string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	s := Settings{
		ConfigPath: path, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
		DecisionLog: filepath.Join(t.TempDir(), "decisions.jsonl"),
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ready:       func(l, m net.Addr) { ready <- [2]net.Addr{l, m} },
	}
	for _, f := range tweak {
		f(&s)
	}
	go func() { done <- Run(ctx, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	})
	select {
	case addrs := <-ready:
		return "http://" + addrs[0].String(), "http://" + addrs[1].String()
	case err := <-done:
		t.Fatalf("proxy did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not start within 10s")
	}
	return "", ""
}

// bearer adds a token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func connect(t *testing.T, endpoint, version, token string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, nil)
	tr := &mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}, Timeout: 10 * time.Second},
		MaxRetries: -1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s) through the proxy: %v", version, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

const e2eConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: e2e, name: %s}
upstream: {url: %q}
auth:
  oidc: {issuer: %q, audience: %q}
sessionStorage: {provider: redis, address: %q, timeout: 5s}   # a loaded machine must not turn a decision into a fail-open
rateLimiting:
  tools:
  - name: echo
    shared: {maxTokens: 3, refillPeriod: 1h}
  - name: search
    perUser: {maxTokens: 2, refillPeriod: 1h}
  - name: nd
    shared: {maxTokens: 3, refillPeriod: 1h}
    perUser: {maxTokens: 1, refillPeriod: 1h}
  prompts:
  - name: summary
    shared: {maxTokens: 1, refillPeriod: 1h}
  resources:
  - uri: file:///motd
    shared: {maxTokens: 1, refillPeriod: 1h}
`

// TestEndToEnd puts the proxy between a real go-sdk client and a real go-sdk server, with
// real signed JWTs and a real redis-server, on both protocol revisions.
func TestEndToEnd(t *testing.T) {
	redisSrv := testredis.Start(t)
	issuer := testoidc.Start(t)
	for _, tc := range []struct {
		version   string
		stateless bool
	}{{"2025-11-25", false}, {"2026-07-28", true}} {
		t.Run(tc.version, func(t *testing.T) {
			upstream := startUpstream(t, tc.stateless)
			name := "v" + strings.ReplaceAll(tc.version, "-", "")
			base, ops := startProxy(t, fmt.Sprintf(e2eConfig, name, upstream, issuer.URL(), testoidc.Audience, redisSrv.Addr))
			endpoint := base + "/mcp"
			token := func(user string) string { return issuer.Token(t, map[string]any{"sub": user}) }
			ctx := t.Context()
			alice := connect(t, endpoint, tc.version, token("alice"))
			if got := alice.InitializeResult().ProtocolVersion; got != tc.version {
				t.Fatalf("negotiated %s through the proxy, want %s", got, tc.version)
			}

			call := func(s *mcp.ClientSession, tool string) error {
				_, err := s.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}})
				return err
			}
			expect := func(what string, errs []error, wantOK []bool) {
				t.Helper()
				for i, err := range errs {
					if (err == nil) != wantOK[i] {
						t.Errorf("%s: call %d: want allowed=%v, got err=%v", what, i+1, wantOK[i], err)
					}
				}
			}

			// Never limited: listing, repeatedly, while limits apply.
			for range 10 {
				if _, err := alice.ListTools(ctx, nil); err != nil {
					t.Fatalf("tools/list through the proxy: %v", err)
				}
			}
			// Shared 3: the 4th call is refused.
			var errs []error
			for range 4 {
				errs = append(errs, call(alice, "echo"))
			}
			expect("echo shared 3", errs, []bool{true, true, true, false})
			t.Logf("what the go-sdk client (%s) reports for a 429: %v", tc.version, errs[3])

			// Per user 2: alice's 3rd search is refused, bob's first is fine.
			bob := connect(t, endpoint, tc.version, token("bob"))
			errs = []error{call(alice, "search"), call(alice, "search"), call(alice, "search"), call(bob, "search")}
			expect("search perUser 2", errs, []bool{true, true, false, true})

			// No drain: shared 3, perUser 1 on tool nd.
			carol := connect(t, endpoint, tc.version, token("carol"))
			dave := connect(t, endpoint, tc.version, token("dave"))
			errs = []error{call(alice, "nd"), call(alice, "nd"), call(bob, "nd"), call(carol, "nd"), call(dave, "nd")}
			expect("no drain", errs, []bool{true, false, true, true, false})

			// Prompts and resources.
			_, err1 := alice.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summary"})
			_, err2 := bob.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summary"})
			expect("prompt shared 1", []error{err1, err2}, []bool{true, false})
			_, err1 = alice.ReadResource(ctx, &mcp.ReadResourceParams{URI: "file:///motd"})
			_, err2 = bob.ReadResource(ctx, &mcp.ReadResourceParams{URI: "file:///motd"})
			expect("resource shared 1", []error{err1, err2}, []bool{true, false})

			// The raw 429: status, headers and the JSON-RPC error body.
			checkRaw429(t, endpoint, tc.version, token("erin"))

			// Without a token: 401 with the RFC 9728 challenge.
			resp, err := http.Post(endpoint, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
				t.Errorf("no token: want 401 with a resource_metadata challenge, got %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}

			// The RFC 9728 document the challenge points at names the issuer.
			if doc := get(t, base+"/.well-known/oauth-protected-resource/mcp"); !strings.Contains(doc, `"authorization_servers":["`+issuer.URL()+`"]`) {
				t.Errorf("protected-resource metadata: %s", doc)
			}

			// Metrics saw it.
			m := get(t, ops+"/metrics")
			for _, want := range []string{
				`tollgate_decisions_total{method="tools/call",outcome="rejected",tier=""}`,
				`tollgate_rejections_total{bucket="tool:echo",scope="shared"}`,
				`tollgate_rejections_total{bucket="tool:search:user",scope="perUser"}`,
			} {
				if !strings.Contains(m, want) {
					t.Errorf("metrics lack %s", want)
				}
			}
			// The clients send the same token on every call: all but each token's first
			// request are answered from the verified-token cache.
			for _, line := range []string{`tollgate_token_cache_lookups_total{result="hit"} `, `tollgate_token_cache_lookups_total{result="miss"} `, "tollgate_token_cache_entries "} {
				if !strings.Contains(m, line) || strings.Contains(m, line+"0\n") {
					t.Errorf("metrics: want %s above 0", line)
				}
			}
			if r := get(t, ops+"/readyz"); r != "ok\n" {
				t.Errorf("/readyz: %q", r)
			}
		})
	}
}

// checkRaw429 sends a tools/call by hand after the echo bucket is empty (a new stateless
// request on 2026-07-28; on 2025-11-25 the proxy answers before any session check).
func checkRaw429(t *testing.T, endpoint, version, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":"r-1","method":"tools/call","params":{"name":"echo","arguments":{}}}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", version)
	if version >= "2026-07-28" {
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", "echo")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		ID    string `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				RetryAfterSeconds int64  `json:"retryAfterSeconds"`
				Limit             string `json:"limit"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("429 body: %v", err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get("RateLimit-Policy") == "" || body.ID != "r-1" || body.Error.Code != 429 ||
		body.Error.Message != "Rate limit exceeded" || body.Error.Data.Limit != "tool:echo" || body.Error.Data.RetryAfterSeconds < 1 {
		t.Errorf("raw 429: status %d, Retry-After %q, RateLimit-Policy %q, RateLimit %q, body %+v",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit"), body)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
