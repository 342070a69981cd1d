package testupstream_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgate-dev/tollgate/internal/testupstream"
)

const testTimeout = 30 * time.Second

// connect opens a go-sdk client session over tr. ctx bounds the session's whole life: the
// legacy SSE transport keeps its stream on the Connect context.
func connect(ctx context.Context, t *testing.T, tr mcp.Transport, version string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "testupstream-test", Version: "1.0.0"}, nil)
	s, err := c.Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s): %v", version, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func streamable(u *testupstream.Upstream) mcp.Transport {
	return &mcp.StreamableClientTransport{Endpoint: u.Endpoint(), MaxRetries: -1}
}

func legacySSE(u *testupstream.Upstream) mcp.Transport {
	return &mcp.SSEClientTransport{Endpoint: u.URL + "/sse"}
}

func callEcho(ctx context.Context, s *mcp.ClientSession) error {
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		return fmt.Errorf("tools/call echo: %w", err)
	}
	if len(res.Content) != 1 || res.IsError {
		return fmt.Errorf("tools/call echo: unexpected result %+v", res)
	}
	if text, ok := res.Content[0].(*mcp.TextContent); !ok || text.Text != "echo:hi" {
		return fmt.Errorf("tools/call echo: content %#v, want the text echo:hi", res.Content[0])
	}
	return nil
}

// callSlow calls the slow tool for 50 ms and checks that it took at least that long.
func callSlow(ctx context.Context, s *mcp.ClientSession) error {
	start := time.Now()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"ms": 50, "text": "z"}})
	if err != nil {
		return fmt.Errorf("tools/call slow: %w", err)
	}
	if len(res.Content) != 1 || res.IsError {
		return fmt.Errorf("tools/call slow: unexpected result %+v", res)
	}
	if text, ok := res.Content[0].(*mcp.TextContent); !ok || text.Text != "slow:z" {
		return fmt.Errorf("tools/call slow: content %#v, want the text slow:z", res.Content[0])
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		return fmt.Errorf("tools/call slow returned after %s, want at least 50ms", took)
	}
	return nil
}

// workload calls echo twice, reads the report once and gets the summary once.
func workload(ctx context.Context, s *mcp.ClientSession) error {
	for range 2 {
		if err := callEcho(ctx, s); err != nil {
			return err
		}
	}
	if _, err := s.ReadResource(ctx, &mcp.ReadResourceParams{URI: "file:///data/report.txt"}); err != nil {
		return fmt.Errorf("resources/read: %w", err)
	}
	if _, err := s.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summary"}); err != nil {
		return fmt.Errorf("prompts/get: %w", err)
	}
	return nil
}

func goStateful(t testing.TB) *testupstream.Upstream {
	return testupstream.StartGo(t, testupstream.GoOptions{})
}

func goStateless(t testing.TB) *testupstream.Upstream {
	return testupstream.StartGo(t, testupstream.GoOptions{Stateless: true})
}

func TestUpstreamsCountWhatTheyExecute(t *testing.T) {
	workloadCounts := map[string]int{testupstream.KeyEcho: 2, testupstream.KeyReport: 1, testupstream.KeyPrompt: 1}
	oneCall := map[string]int{testupstream.KeyEcho: 1}
	cases := map[string]struct {
		reason    string
		start     func(testing.TB) *testupstream.Upstream
		transport func(*testupstream.Upstream) mcp.Transport
		version   string
		run       func(context.Context, *mcp.ClientSession) error
		want      map[string]int
	}{
		"GoStreamableStateful": {
			reason:    "go-sdk's stateful Streamable HTTP server (sessions) counts each execution once.",
			start:     goStateful,
			transport: streamable,
			version:   "2025-11-25",
			run:       workload,
			want:      workloadCounts,
		},
		"GoStreamableStateless2026": {
			reason:    "go-sdk serves 2026-07-28 (server/discover, no sessions) only when stateless.",
			start:     goStateless,
			transport: streamable,
			version:   "2026-07-28",
			run:       workload,
			want:      workloadCounts,
		},
		"GoLegacySSE": {
			reason:    "go-sdk's HTTP+SSE handler (2024-11-05) executes a tool call POSTed to its announced endpoint.",
			start:     goStateful,
			transport: legacySSE,
			version:   "2024-11-05",
			run:       callEcho,
			want:      oneCall,
		},
		"GoSlowTool": {
			reason:    "The slow tool sleeps for its ms argument and counts once.",
			start:     goStateful,
			transport: streamable,
			version:   "2025-11-25",
			run:       callSlow,
			want:      map[string]int{testupstream.KeySlow: 1},
		},
		"TSStreamableStateful": {
			reason:    "The TypeScript SDK on Express, with the README's session map, counts each execution once.",
			start:     testupstream.StartTS,
			transport: streamable,
			version:   "2025-11-25",
			run:       workload,
			want:      workloadCounts,
		},
		"TSStreamableStateless": {
			reason:    "The README's stateless TypeScript server (a server per request) counts the same.",
			start:     testupstream.StartTSStateless,
			transport: streamable,
			version:   "2025-11-25",
			run:       workload,
			want:      workloadCounts,
		},
		"TSSlowTool": {
			reason:    "The slow tool sleeps for its ms argument and counts once.",
			start:     testupstream.StartTS,
			transport: streamable,
			version:   "2025-11-25",
			run:       callSlow,
			want:      map[string]int{testupstream.KeySlow: 1},
		},
		"TSLegacySSE": {
			reason:    "The README's SSEServerTransport('/messages', res) executes a tool call POSTed to /messages.",
			start:     testupstream.StartTS,
			transport: legacySSE,
			version:   "2024-11-05",
			run:       callEcho,
			want:      oneCall,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			u := tc.start(t)
			s := connect(ctx, t, tc.transport(u), tc.version)
			if err := tc.run(ctx, s); err != nil {
				t.Fatalf("%s\n%v", tc.reason, err)
			}
			if diff := cmp.Diff(tc.want, u.Counts(t)); diff != "" {
				t.Errorf("%s\nCounts: -want +got:\n%s", tc.reason, diff)
			}
			u.Reset(t)
			if diff := cmp.Diff(map[string]int{}, u.Counts(t)); diff != "" {
				t.Errorf("%s\nCounts after Reset: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestLegacySSEEndpoint records where each legacy SSE server tells its client to POST.
func TestLegacySSEEndpoint(t *testing.T) {
	cases := map[string]struct {
		reason string
		start  func(testing.TB) *testupstream.Upstream
		want   string // the endpoint event's data, up to the session id
	}{
		"Go": {
			reason: "go-sdk announces the GET's own path with a lower-case sessionid query.",
			start:  goStateful,
			want:   "/sse?sessionid=",
		},
		"TS": {
			reason: "SSEServerTransport('/messages', res) announces /messages with sessionId.",
			start:  testupstream.StartTS,
			want:   "/messages?sessionId=",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			u := tc.start(t)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.URL+"/sse", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", "text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET /sse: %v", err)
			}
			defer func() { _ = resp.Body.Close() }()
			sc := bufio.NewScanner(resp.Body)
			var got string
			for sc.Scan() {
				if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					got = data
					break
				}
			}
			if !strings.HasPrefix(got, tc.want) || len(got) == len(tc.want) {
				t.Errorf("%s\nendpoint event data %q, want %q followed by a session id (scan error: %v)", tc.reason, got, tc.want, sc.Err())
			}
		})
	}
}

// rawClient speaks Streamable HTTP by hand, without following redirects.
type rawClient struct {
	t       *testing.T
	http    *http.Client
	session string
}

func newRawClient(t *testing.T) *rawClient {
	return &rawClient{t: t, http: &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// post sends a JSON-RPC message to url and returns the status, having drained the body.
func (c *rawClient) post(url, body string) (int, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header
}

// initialize opens a session on endpoint (initialize, then notifications/initialized).
func (c *rawClient) initialize(endpoint string) {
	c.t.Helper()
	status, h := c.post(endpoint, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1.0.0"}}}`)
	if status != http.StatusOK || h.Get("Mcp-Session-Id") == "" {
		c.t.Fatalf("initialize: status %d, session %q", status, h.Get("Mcp-Session-Id"))
	}
	c.session = h.Get("Mcp-Session-Id")
	if status, _ := c.post(endpoint, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); status != http.StatusAccepted {
		c.t.Fatalf("notifications/initialized: status %d", status)
	}
}

// TestPathSpellingsOfTheEndpoint records which spellings of /mcp each server routes to its MCP
// handler: what a proxy that matches paths must treat as /mcp.
func TestPathSpellingsOfTheEndpoint(t *testing.T) {
	type result struct {
		Status int
		Counts map[string]int
	}
	executed := func(status int) result {
		return result{Status: status, Counts: map[string]int{testupstream.KeyEcho: 1}}
	}
	refused := func(status int) result { return result{Status: status, Counts: map[string]int{}} }
	cases := map[string]struct {
		reason   string
		upstream string // "Go" or "TS"
		path     string
		want     result
	}{
		"TSExact":          {reason: "The route as written.", upstream: "TS", path: "/mcp", want: executed(200)},
		"TSUpperCase":      {reason: "Express routing is case-insensitive: /MCP reaches app.post('/mcp').", upstream: "TS", path: "/MCP", want: executed(200)},
		"TSTrailingSlash":  {reason: "Express routing ignores a trailing slash: /mcp/ reaches app.post('/mcp').", upstream: "TS", path: "/mcp/", want: executed(200)},
		"TSBoth":           {reason: "Both at once: /MCP/.", upstream: "TS", path: "/MCP/", want: executed(200)},
		"TSQuery":          {reason: "The query is not part of the route.", upstream: "TS", path: "/mcp?x=1", want: executed(200)},
		"TSSemicolon":      {reason: "A ;parameter is part of the path for Express: no route.", upstream: "TS", path: "/mcp;x", want: refused(404)},
		"TSEncodedSlash":   {reason: "An encoded trailing slash is not a slash for Express.", upstream: "TS", path: "/mcp%2F", want: refused(404)},
		"TSDoubleSlash":    {reason: "Express does not clean //mcp.", upstream: "TS", path: "//mcp", want: refused(404)},
		"GoExact":          {reason: "The route as written.", upstream: "Go", path: "/mcp", want: executed(200)},
		"GoUpperCase":      {reason: "http.ServeMux is case-sensitive.", upstream: "Go", path: "/MCP", want: refused(404)},
		"GoTrailingSlash":  {reason: "The pattern /mcp matches only /mcp.", upstream: "Go", path: "/mcp/", want: refused(404)},
		"GoDoubleSlash":    {reason: "http.ServeMux redirects an unclean path (307 for a POST) instead of serving it.", upstream: "Go", path: "//mcp", want: refused(307)},
		"GoDotDot":         {reason: "Likewise for a dot-dot segment.", upstream: "Go", path: "/x/../mcp", want: refused(307)},
		"GoEncodedSlash":   {reason: "An encoded slash is not a slash for the /mcp pattern.", upstream: "Go", path: "/mcp%2F", want: refused(404)},
		"GoSemicolonParam": {reason: "Go does not strip ;parameters.", upstream: "Go", path: "/mcp;x", want: refused(404)},
	}
	upstreams := map[string]*testupstream.Upstream{"Go": goStateful(t), "TS": testupstream.StartTS(t)}
	clients := map[string]*rawClient{}
	for kind, u := range upstreams {
		clients[kind] = newRawClient(t)
		clients[kind].initialize(u.Endpoint())
	}
	const call = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			u, c := upstreams[tc.upstream], clients[tc.upstream]
			c.t = t
			u.Reset(t)
			status, _ := c.post(u.URL+tc.path, call)
			got := result{Status: status, Counts: u.Counts(t)}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nPOST %s: -want +got:\n%s", tc.reason, tc.path, diff)
			}
			if n := u.Executed(t, testupstream.KeyEcho); n != tc.want.Counts[testupstream.KeyEcho] {
				t.Errorf("%s\nExecuted(%q) = %d, want %d", tc.reason, testupstream.KeyEcho, n, tc.want.Counts[testupstream.KeyEcho])
			}
		})
	}
}

// TestResourceURISpellings records which spellings of a resource URI each SDK serves, and
// under which URI its handler sees them.
func TestResourceURISpellings(t *testing.T) {
	cases := map[string]struct {
		reason   string
		upstream string // "Go" or "TS"
		uri      string
		wantErr  bool
		want     map[string]int
	}{
		"TSLocalhostHost": {
			reason:   "new URL('file://localhost/x').toString() is file:///x: the TS SDK serves it as the report.",
			upstream: "TS", uri: "file://localhost/data/report.txt",
			want: map[string]int{testupstream.KeyReport: 1},
		},
		"TSUpperCaseScheme": {
			reason:   "The WHATWG parser lower-cases the scheme: FILE:///x is file:///x.",
			upstream: "TS", uri: "FILE:///data/report.txt",
			want: map[string]int{testupstream.KeyReport: 1},
		},
		"GoLocalhostHost": {
			reason:   "go-sdk looks resources up by the exact string: not found, not executed.",
			upstream: "Go", uri: "file://localhost/data/report.txt",
			wantErr: true, want: map[string]int{},
		},
		"GoUpperCaseScheme": {
			reason:   "go-sdk looks resources up by the exact string: not found, not executed.",
			upstream: "Go", uri: "FILE:///data/report.txt",
			wantErr: true, want: map[string]int{},
		},
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	upstreams := map[string]*testupstream.Upstream{"Go": goStateful(t), "TS": testupstream.StartTS(t)}
	sessions := map[string]*mcp.ClientSession{}
	for kind, u := range upstreams {
		sessions[kind] = connect(ctx, t, streamable(u), "2025-11-25")
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			u := upstreams[tc.upstream]
			u.Reset(t)
			_, err := sessions[tc.upstream].ReadResource(ctx, &mcp.ReadResourceParams{URI: tc.uri})
			if (err != nil) != tc.wantErr {
				t.Errorf("%s\nresources/read %s: error %v, want an error: %v", tc.reason, tc.uri, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, u.Counts(t)); diff != "" {
				t.Errorf("%s\nCounts: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestNaiveUpstream(t *testing.T) {
	inner := "POST /x HTTP/1.1\r\nHost: upstream\r\nContent-Length: 0\r\n\r\n"
	withBody := func(head, body string) string {
		return fmt.Sprintf("%s\r\nHost: upstream\r\nContent-Length: %d\r\n\r\n%s", head, len(body), body)
	}
	cases := map[string]struct {
		reason    string
		send      string
		want      map[string]int
		responses int
	}{
		"HeadBodyIsASecondRequest": {
			reason:    "The HEAD's body is not read, so the POST in it is parsed and executed: smuggled.",
			send:      withBody("HEAD / HTTP/1.1", inner),
			want:      map[string]int{"HEAD /": 1, "POST /x": 1},
			responses: 2,
		},
		"GetBodyIsASecondRequest": {
			reason:    "Likewise for GET.",
			send:      withBody("GET /a HTTP/1.1", inner),
			want:      map[string]int{"GET /a": 1, "POST /x": 1},
			responses: 2,
		},
		"PostBodyIsRead": {
			reason:    "A POST's body is read by Content-Length: the request in it is not executed.",
			send:      withBody("POST /a HTTP/1.1", inner),
			want:      map[string]int{"POST /a": 1},
			responses: 1,
		},
		"ChunkedPostBodyIsRead": {
			reason: "A chunked POST body is read to its last chunk; the next request follows it.",
			send: fmt.Sprintf("POST /a HTTP/1.1\r\nHost: upstream\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(inner), inner) +
				"GET /b HTTP/1.1\r\nHost: upstream\r\n\r\n",
			want:      map[string]int{"POST /a": 1, "GET /b": 1},
			responses: 2,
		},
		"Malformed": {
			reason:    "What is not a request line is counted as malformed, answered 400, and the connection closed.",
			send:      "NONSENSE\r\n\r\n" + inner,
			want:      map[string]int{testupstream.KeyMalformed: 1},
			responses: 1,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			u := testupstream.StartNaive(t)
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(u.URL, "http://"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, tc.send); err != nil {
				t.Fatal(err)
			}
			_ = conn.(*net.TCPConn).CloseWrite() // the upstream ends the connection after the last request
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading the responses: %v", err)
			}
			if n := strings.Count(string(got), "HTTP/1.1 "); n != tc.responses {
				t.Errorf("%s\n%d responses, want %d:\n%s", tc.reason, n, tc.responses, got)
			}
			if diff := cmp.Diff(tc.want, u.Counts(t)); diff != "" {
				t.Errorf("%s\nCounts: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
