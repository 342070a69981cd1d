package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
)

// The rejection forms end to end: a real go-sdk client in front of the proxy, a real go-sdk
// server behind it (counting what it executed), on both protocol revisions and on both
// miniredis and redis-server. What the client exposes is what an agent built on it can act on.

const rejectConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: reject, name: %s}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, timeout: 5s}   # a loaded machine must not turn a decision into a fail-open
rateLimiting:
  tools:
  - name: search
    perUser: {maxTokens: 2, refillPeriod: 1h}
  prompts:
  - name: summary
    shared: {maxTokens: 1, refillPeriod: 1h}
responses: %s
`

// seen records the HTTP status and rejection headers of the last tools/call or prompts/get
// POST the client sent: what reached the client beneath what its SDK hands on.
type seen struct {
	next http.RoundTripper
	user string

	mu   sync.Mutex
	last wire
}

// wire is one response as it came over the wire.
type wire struct {
	Status      int
	ContentType string
	RetryAfter  string
	RateLimit   string
	Policy      string
}

func (s *seen) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-User", s.user)
	limited := false
	if r.Method == http.MethodPost && r.GetBody != nil {
		if b, err := r.GetBody(); err == nil {
			body, _ := io.ReadAll(b)
			limited = bytes.Contains(body, []byte(`"method":"tools/call"`)) || bytes.Contains(body, []byte(`"method":"prompts/get"`))
		}
	}
	resp, err := s.next.RoundTrip(r)
	if err == nil && limited {
		s.mu.Lock()
		s.last = wire{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), RetryAfter: resp.Header.Get("Retry-After"),
			RateLimit: resp.Header.Get("RateLimit"), Policy: resp.Header.Get("RateLimit-Policy")}
		s.mu.Unlock()
	}
	return resp, err
}

func (s *seen) lastResponse() wire {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// connectAs connects a go-sdk client through the proxy as user, recording what it received.
func connectAs(t *testing.T, endpoint, version, user string) (*mcp.ClientSession, *seen) {
	t.Helper()
	rec := &seen{next: http.DefaultTransport, user: user}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e-reject", Version: "1.0.0"}, nil)
	tr := &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}, MaxRetries: -1}
	s, err := c.Connect(t.Context(), tr, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s) through the proxy: %v", version, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, rec
}

// exposed is what the go-sdk client hands its caller for a rejected call: the error (its text,
// and the JSON-RPC error when one can be reached with errors.As), or the result.
type exposed struct {
	Wire     wire
	Err      string         // err.Error(), "" without an error
	RPCError *rpcError      // errors.As(err, *jsonrpc.Error)
	IsError  bool           // CallToolResult.IsError
	Text     string         // its text content
	Meta     map[string]any // its _meta
}

type rpcError struct {
	Code    int64
	Message string
	Data    map[string]any
}

func expose(w wire, res *mcp.CallToolResult, err error) exposed {
	e := exposed{Wire: w}
	if err != nil {
		e.Err = err.Error()
		var je *jsonrpc.Error
		if errors.As(err, &je) {
			e.RPCError = &rpcError{Code: je.Code, Message: je.Message}
			_ = json.Unmarshal(je.Data, &e.RPCError.Data)
			e.RPCError.Data = approxWaits(e.RPCError.Data)
		}
	}
	if res != nil {
		e.IsError = res.IsError
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				e.Text += tc.Text
			}
		}
		e.Meta = approxWaits(res.Meta)
	}
	return e
}

// approxWaits replaces the waits of data, which run on Redis's real clock, by what they
// must be close to: a 2 per hour bucket refills a token in 30 min, a 1 per hour one in 60.
func approxWaits(data map[string]any) map[string]any {
	if data == nil {
		return nil
	}
	out := map[string]any{}
	for k, v := range data {
		f, ok := v.(float64)
		switch {
		case ok && k == "retryAfterMs":
			v = nearest(f, 1000, []float64{1_800_000, 3_600_000})
		case ok && k == "retryAfterSeconds":
			v = nearest(f, 1, []float64{1800, 3600})
		}
		out[k] = v
	}
	return out
}

// nearest is "≈w" for the w of ws that f is at most 10 s below (waits only shrink), else f.
func nearest(f, perSecond float64, ws []float64) any {
	for _, w := range ws {
		if f <= w && w-f <= 10*perSecond && f == math.Trunc(f) {
			return fmt.Sprintf("≈%.0f", w)
		}
	}
	return f
}

// redisStores are the Redis servers the end-to-end rejection tests run on.
func redisStores(t *testing.T) map[string]string {
	return map[string]string{
		"miniredis":    miniredis.RunT(t).Addr(),
		"redis-server": testredis.Start(t).Addr, // a missing redis-server fails under CI=true
	}
}

var protocolRevisions = []struct {
	version   string
	stateless bool
}{{"2025-11-25", false}, {"2026-07-28", true}}

// TestRejectionsEndToEnd measures, for each form, what the go-sdk client exposes when the
// proxy rejects a tools/call and a prompts/get, and that the upstream never ran them.
func TestRejectionsEndToEnd(t *testing.T) {
	const (
		sdk429   = `calling "tools/call": rejected by transport: sending "tools/call": Too Many Requests`
		sdkP429  = `calling "prompts/get": rejected by transport: sending "prompts/get": Too Many Requests`
		toolText = "Rate limit reached for search (2 calls per hour per user). Try again in 30 min."
	)
	// go-sdk's jsonrpc2.ErrRejected: its own error, with no data, for every 429 (and 502-504).
	sdkRejected := &rpcError{Code: -32005, Message: "rejected by transport"}
	toolData := map[string]any{"retryAfterSeconds": "≈1800", "retryAfterMs": "≈1800000", "limit": "tool:search:user", "scope": "perUser"}
	promptData := map[string]any{"retryAfterSeconds": "≈3600", "retryAfterMs": "≈3600000", "limit": "prompt:summary", "scope": "shared"}
	toolWire := func(status int) wire {
		return wire{Status: status, ContentType: "application/json", RetryAfter: "1800",
			Policy: `"tool:search:user";q=2;w=3600`, RateLimit: `"tool:search:user";r=0;t=1800`}
	}
	promptWire := func(status int) wire {
		return wire{Status: status, ContentType: "application/json", RetryAfter: "3600",
			Policy: `"prompt:summary";q=1;w=3600`, RateLimit: `"prompt:summary";r=0;t=3600`}
	}
	cases := map[string]struct {
		reason    string
		responses string
		tool      exposed
		prompt    exposed
	}{
		"Error": {
			reason:    "The default error form under HTTP 429: go-sdk drops the body (and Retry-After); its error is its own ErrRejected (-32005, no data) and says only Too Many Requests.",
			responses: "{}",
			tool:      exposed{Wire: toolWire(429), Err: sdk429, RPCError: sdkRejected},
			prompt:    exposed{Wire: promptWire(429), Err: sdkP429, RPCError: sdkRejected},
		},
		"ErrorStatus200": {
			reason:    "rejectStatus 200: go-sdk returns the JSON-RPC error itself, code 429 and data with retryAfterMs, reachable with errors.As.",
			responses: "{rejectStatus: 200}",
			tool: exposed{Wire: toolWire(200), Err: `calling "tools/call": Rate limit exceeded`,
				RPCError: &rpcError{Code: 429, Message: "Rate limit exceeded", Data: toolData}},
			prompt: exposed{Wire: promptWire(200), Err: `calling "prompts/get": Rate limit exceeded`,
				RPCError: &rpcError{Code: 429, Message: "Rate limit exceeded", Data: promptData}},
		},
		"ToolResult": {
			reason:    "ToolResult: the tools/call is a result with IsError, the text an agent reads, _meta with retryAfterMs; prompts/get keeps the error (under 429, dropped).",
			responses: "{toolRejection: ToolResult}",
			tool:      exposed{Wire: toolWire(200), IsError: true, Text: toolText, Meta: toolData},
			prompt:    exposed{Wire: promptWire(429), Err: sdkP429, RPCError: sdkRejected},
		},
		"ToolResultStatus200": {
			reason:    "ToolResult with rejectStatus 200: the prompt's error reaches the client too.",
			responses: "{toolRejection: ToolResult, rejectStatus: 200}",
			tool:      exposed{Wire: toolWire(200), IsError: true, Text: toolText, Meta: toolData},
			prompt: exposed{Wire: promptWire(200), Err: `calling "prompts/get": Rate limit exceeded`,
				RPCError: &rpcError{Code: 429, Message: "Rate limit exceeded", Data: promptData}},
		},
	}
	stores := redisStores(t)
	for _, storeName := range []string{"miniredis", "redis-server"} {
		for _, rev := range protocolRevisions {
			t.Run(storeName+"/"+rev.version, func(t *testing.T) {
				up := testupstream.StartGo(t, testupstream.GoOptions{Stateless: rev.stateless})
				for name, tc := range cases {
					t.Run(name, func(t *testing.T) {
						up.Reset(t)
						serverSeq++
						base, _ := startProxy(t, fmt.Sprintf(rejectConfig, fmt.Sprintf("form-%d", serverSeq), up.Endpoint(), stores[storeName], tc.responses))
						alice, rec := connectAs(t, base+"/mcp", rev.version, "alice")
						ctx := t.Context()
						search := func() (*mcp.CallToolResult, error) {
							return alice.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "q"}})
						}
						for i := range 2 {
							if res, err := search(); err != nil || res.IsError {
								t.Fatalf("search %d of 2 per hour: %v %+v", i+1, err, res)
							}
						}
						res, err := search()
						gotTool := expose(rec.lastResponse(), res, err)
						if _, err := alice.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summary"}); err != nil {
							t.Fatalf("prompt 1 of 1 per hour: %v", err)
						}
						_, err = alice.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summary"})
						gotPrompt := expose(rec.lastResponse(), nil, err)
						if diff := cmp.Diff(tc.tool, gotTool); diff != "" {
							t.Errorf("%s\nrejected tools/call: -want +got:\n%s", tc.reason, diff)
						}
						if diff := cmp.Diff(tc.prompt, gotPrompt); diff != "" {
							t.Errorf("%s\nrejected prompts/get: -want +got:\n%s", tc.reason, diff)
						}
						// The rejected calls never ran; the session still works after them.
						wantRan := map[string]int{testupstream.KeySearch: 2, testupstream.KeyPrompt: 1}
						if diff := cmp.Diff(wantRan, up.Counts(t)); diff != "" {
							t.Errorf("what the upstream executed: -want +got:\n%s", diff)
						}
						if _, err := alice.ListTools(ctx, nil); err != nil {
							t.Errorf("tools/list after the rejections: %v", err)
						}
					})
				}
			})
		}
	}
}

// TestToolRejectionReload: responses.toolRejection reloads with the file, like the other
// responses fields: the same empty bucket answers in the new form without a restart.
func TestToolRejectionReload(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	addr := miniredis.RunT(t).Addr()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	write := func(responses string) {
		// Write then rename, as a ConfigMap volume swaps its files.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf(rejectConfig, "reload", up.Endpoint(), addr, responses)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("{}")
	base, _ := startProxy(t, fmt.Sprintf(rejectConfig, "reload", up.Endpoint(), addr, "{}"), func(s *Settings) {
		s.ConfigPath = path
		s.ReloadInterval = 20 * time.Millisecond
	})
	alice, _ := connectAs(t, base+"/mcp", "2025-11-25", "alice")
	search := func() (*mcp.CallToolResult, error) {
		return alice.CallTool(t.Context(), &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "q"}})
	}
	for range 2 {
		if _, err := search(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := search(); err == nil {
		t.Fatal("the third search of 2 per hour was not refused")
	}
	write("{toolRejection: ToolResult}")
	waitUntil(t, "a rejected call to come back as a tool result", func() bool {
		res, err := search()
		return err == nil && res.IsError
	})
	write("{}")
	waitUntil(t, "the error form to come back", func() bool {
		_, err := search()
		return err != nil
	})
	if n := up.Executed(t, testupstream.KeySearch); n != 2 {
		t.Errorf("the upstream ran search %d times, want 2", n)
	}
}

// TestToolResultLegacySSE: a legacy HTTP+SSE client (2024-11-05) reads answers from its event
// stream and only the status of its POSTs, so under ToolResult it keeps the 429: its call
// fails at once instead of waiting for an answer that never comes.
func TestToolResultLegacySSE(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	base, _ := startProxy(t, fmt.Sprintf(rejectConfig, "legacy", up.URL+"/sse", miniredis.RunT(t).Addr(), "{toolRejection: ToolResult}"))
	c := mcp.NewClient(&mcp.Implementation{Name: "legacy-client", Version: "1.0.0"}, nil)
	rec := &seen{next: http.DefaultTransport, user: "alice"}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, &mcp.SSEClientTransport{Endpoint: base + "/sse", HTTPClient: &http.Client{Transport: rec}}, nil)
	if err != nil {
		t.Fatalf("legacy SSE connect through the proxy: %v", err)
	}
	defer func() { _ = s.Close() }()
	var errs []string
	for range 3 {
		_, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "q"}})
		errs = append(errs, fmt.Sprint(err))
	}
	want := []string{"<nil>", "<nil>", `calling "tools/call": failed to write: 429 Too Many Requests`}
	if diff := cmp.Diff(want, errs); diff != "" {
		t.Errorf("legacy client, search 2 per hour: -want +got:\n%s", diff)
	}
	if got := rec.lastResponse().Status; got != http.StatusTooManyRequests {
		t.Errorf("the rejected POST: status %d, want 429", got)
	}
	if n := up.Executed(t, testupstream.KeySearch); n != 2 {
		t.Errorf("the upstream ran search %d times, want 2", n)
	}
}

// TestRejectionsTypeScriptClient measures what the official TypeScript SDK client (1.32.2,
// Streamable HTTP) hands its caller for a rejected tools/call in each form. The waits in its
// messages run on Redis's real clock and are masked.
func TestRejectionsTypeScriptClient(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	addr := miniredis.RunT(t).Addr()
	const (
		body     = `{"jsonrpc":"2.0","id":3,"error":{"code":429,"message":"Rate limit exceeded","data":{"limit":"tool:search:user","retryAfterMs":N,"retryAfterSeconds":N,"scope":"perUser"}}}`
		toolText = "Rate limit reached for search (2 calls per hour per user). Try again in 30 min."
	)
	ok := testupstream.TSCall{Result: &testupstream.TSResult{Text: "search:q"}}
	cases := map[string]struct {
		reason    string
		responses string
		want      testupstream.TSCall
	}{
		"Error": {
			reason:    "Under 429 the SDK throws a StreamableHTTPError: code 429, the body as text in its message, no data.",
			responses: "{}",
			want:      testupstream.TSCall{Error: &testupstream.TSError{Name: "StreamableHTTPError", Code: float64(429), Message: "Streamable HTTP error: Error POSTing to endpoint: " + body}},
		},
		"ErrorStatus200": {
			reason:    "With rejectStatus 200 it throws an McpError with code 429 and the data, retryAfterMs included.",
			responses: "{rejectStatus: 200}",
			want: testupstream.TSCall{Error: &testupstream.TSError{Name: "McpError", Code: float64(429), Message: "MCP error 429: Rate limit exceeded",
				Data: map[string]any{"limit": "tool:search:user", "retryAfterMs": "N", "retryAfterSeconds": "N", "scope": "perUser"}}},
		},
		"ToolResult": {
			reason:    "With ToolResult it returns the result: isError, the text, _meta with retryAfterMs.",
			responses: "{toolRejection: ToolResult}",
			want: testupstream.TSCall{Result: &testupstream.TSResult{IsError: true, Text: toolText,
				Meta: map[string]any{"limit": "tool:search:user", "retryAfterMs": "N", "retryAfterSeconds": "N", "scope": "perUser"}}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			up.Reset(t)
			serverSeq++
			base, _ := startProxy(t, fmt.Sprintf(rejectConfig, fmt.Sprintf("ts-%d", serverSeq), up.Endpoint(), addr, tc.responses))
			got := testupstream.RunTSClient(t, base+"/mcp", "alice", "search", 3)
			for i := range got {
				got[i] = maskTSWaits(got[i])
			}
			want := []testupstream.TSCall{ok, ok, tc.want}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
			if n := up.Executed(t, testupstream.KeySearch); n != 2 {
				t.Errorf("the upstream ran search %d times, want 2", n)
			}
		})
	}
}

var waitNumber = regexp.MustCompile(`("retryAfter(?:Ms|Seconds)":)\d+`)

// maskTSWaits replaces the waits in a TypeScript call's message, data and _meta by N.
func maskTSWaits(c testupstream.TSCall) testupstream.TSCall {
	mask := func(m map[string]any) {
		for _, k := range []string{"retryAfterMs", "retryAfterSeconds"} {
			if v, ok := m[k].(float64); ok && v > 0 {
				m[k] = "N"
			}
		}
	}
	if c.Error != nil {
		c.Error.Message = waitNumber.ReplaceAllString(c.Error.Message, "${1}N")
		if d, ok := c.Error.Data.(map[string]any); ok {
			mask(d)
		}
	}
	if c.Result != nil && c.Result.Meta != nil {
		mask(c.Result.Meta)
	}
	return c
}
