package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
	"github.com/tollgate-dev/tollgate/proxy/enforce"
)

// The attack suite: one case per way around a limit that was found in the proxy, each tried
// as an attacker would against real upstreams — the go-sdk server and the official TypeScript
// SDK server on Express 5 — and each asserting what the upstream EXECUTED (its own counters),
// not only the status the attacker saw. docs/security.md lists the guarantees it shows.

const attackConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: attack, name: %s}
upstream:
  url: %q
  legacySSEPaths: [/sse]   # TypeScript: its /messages is learned from the stream
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, timeout: 2s}
rateLimiting:
  failurePolicy: Deny   # a slow store must show as 503 here, never as a call let through
  tools:
  - name: search
    perUser: {maxTokens: 2, refillPeriod: 1h}
  - name: echo
    shared: {maxTokens: 1000, refillPeriod: 1h}
  resources:
  - uri: file:///data/report.txt
    shared: {maxTokens: 1, refillPeriod: 1h}
maxBodyBytes: 65536
http:
  bodyReadTimeout: 1s
  maxBufferedBytes: 2097152
  maxBufferedBytesPerCaller: 262144
  maxStreams: 4
  maxStreamsPerCaller: 2
`

// attackEnv is one upstream with a fresh proxy in front of it per case.
type attackEnv struct {
	up    *testupstream.Upstream
	redis string
	kind  string // "go" or "ts"
}

var serverSeq int

// proxy starts a proxy for this case (its own server name: its own buckets).
func (e attackEnv) proxy(t *testing.T) (base, ops string) {
	t.Helper()
	serverSeq++
	return startProxy(t, fmt.Sprintf(attackConfig, fmt.Sprintf("%s-%d", e.kind, serverSeq), e.up.Endpoint(), e.redis))
}

// settle waits for the upstream's counts to stop changing (legacy POSTs are answered 202
// before the upstream runs them) and returns them.
func settle(t *testing.T, up *testupstream.Upstream) map[string]int {
	t.Helper()
	last := up.Counts(t)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(150 * time.Millisecond)
		now := up.Counts(t)
		if cmp.Equal(now, last) {
			return now
		}
		last = now
	}
	return last
}

func statuses(rs []rawResponse) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.Status
	}
	return out
}

func count(xs []int, v int) int {
	n := 0
	for _, x := range xs {
		if x == v {
			n++
		}
	}
	return n
}

func TestAttack(t *testing.T) {
	redisSrv := testredis.Start(t)
	upstreams := []struct {
		kind  string
		start func(testing.TB) *testupstream.Upstream
	}{
		{"go", func(t testing.TB) *testupstream.Upstream { return testupstream.StartGo(t, testupstream.GoOptions{}) }},
		{"ts", testupstream.StartTS},
	}
	cases := []struct {
		name   string
		reason string
		run    func(t *testing.T, e attackEnv)
	}{
		{"EndpointSpellings", "Every spelling an upstream framework routes to its MCP handler is the endpoint: parsed, identified, limited.", attackEndpointSpellings},
		{"LegacySSE", "The legacy HTTP+SSE transport's POST endpoint, learned from the stream, is limited and bound to the stream's caller.", attackLegacySSE},
		{"ResourceSpellings", "Spellings of one resource URI that the server resolves alike share one bucket.", attackResourceSpellings},
		{"MethodsAndBodies", "Only POST carries a body to an endpoint; other methods are refused, never forwarded unparsed.", attackMethodsAndBodies},
		{"Upgrade", "A protocol upgrade is never relayed on the endpoint.", attackUpgrade},
		{"HopByHopIdentity", "The identity the proxy charged is the identity the upstream receives.", attackHopByHop},
		{"SlowBody", "A body that does not arrive in time is answered 408 and never reaches the upstream.", attackSlowBody},
		{"StalledBodies", "Many stalled bodies hold bounded memory and leave an honest caller served.", attackStalledBodies},
		{"Streams", "Open streams are capped per caller and in all.", attackStreams},
		{"UnknownPath", "Any other path is 404 from the proxy and never reaches the upstream.", attackUnknownPath},
	}
	for _, u := range upstreams {
		t.Run(u.kind, func(t *testing.T) {
			e := attackEnv{up: u.start(t), redis: redisSrv.Addr, kind: u.kind}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					e.up.Reset(t)
					tc.run(t, e)
					if t.Failed() {
						t.Log(tc.reason)
					}
				})
			}
		})
	}
}

func attackEndpointSpellings(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	alice := newMCPClient(t, base, map[string]string{"X-User": "alice"})
	alice.initialize("/mcp")
	spellings := []string{"/mcp", "/MCP", "/Mcp/", "/mcp/", "//mcp", "/mcp;x=1", "/%6dcp", "/x/../mcp", "/mcp#f", `/x\..\mcp`, "/mcp%2F"}
	var got []rawResponse
	for _, p := range spellings {
		got = append(got, alice.callTool(p, "search"))
	}
	st := statuses(got)
	if count(st, 200) != 2 || count(st, 429) != len(spellings)-2 {
		t.Errorf("perUser 2 across %d spellings: statuses %v, want 2×200 then 429s", len(spellings), st)
	}
	// Nobody: with a per-user limit in force, no identity is a 401 in every spelling.
	anon := newMCPClient(t, base, nil)
	anon.session = alice.session
	for _, p := range []string{"/MCP/", "/mcp/", "//Mcp"} {
		if r := anon.callTool(p, "search"); r.Status != http.StatusUnauthorized {
			t.Errorf("no identity at %s: %d, want 401", p, r.Status)
		}
	}
	if n := settle(t, e.up)[testupstream.KeySearch]; n != 2 {
		t.Errorf("the upstream executed search %d times, want 2 (the limit)", n)
	}
}

// openStream GETs path on the proxy as user and returns the connection (open) and the first
// event's data, or the status when the proxy refused.
func openStream(t *testing.T, base, path, user string) (net.Conn, string, int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), rawTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(rawTimeout))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n", path)
	if user != "" {
		fmt.Fprintf(c, "X-User: %s\r\n", user)
	}
	fmt.Fprint(c, "\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	// The connection first: closing the body of an endless stream would drain it.
	t.Cleanup(func() { _ = c.Close(); _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, "", resp.StatusCode
	}
	// The endpoint event: "event: endpoint" then "data: ...".
	sc := bufio.NewScanner(resp.Body)
	var event string
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event:"); ok {
			event = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "data:"); ok && event == "endpoint" {
			_ = c.SetDeadline(time.Time{})
			return c, strings.TrimSpace(v), http.StatusOK
		}
	}
	t.Fatalf("GET %s: no endpoint event (%v)", path, sc.Err())
	return nil, "", 0
}

func attackLegacySSE(t *testing.T, e attackEnv) {
	base, ops := e.proxy(t)
	_, endpoint, status := openStream(t, base, "/sse", "alice")
	if status != http.StatusOK {
		t.Fatalf("GET /sse: %d", status)
	}
	if !strings.HasPrefix(endpoint, "/") {
		t.Fatalf("announced endpoint %q: want an absolute path on the proxy", endpoint)
	}
	alice := newMCPClient(t, base, map[string]string{"X-User": "alice"})
	alice.post(endpoint, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"attack","version":"1"}}}`)
	alice.post(endpoint, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	var got []rawResponse
	for range 8 {
		got = append(got, alice.callTool(endpoint, "search"))
	}
	st := statuses(got)
	if count(st, 429) != 6 {
		t.Errorf("8 calls on the legacy endpoint, perUser 2: statuses %v, want 6 rejections", st)
	}
	// Another caller may not post into alice's session.
	bob := newMCPClient(t, base, map[string]string{"X-User": "bob"})
	if r := bob.callTool(endpoint, "echo"); r.Status != http.StatusForbidden {
		t.Errorf("bob posting into alice's session: %d, want 403", r.Status)
	}
	counts := settle(t, e.up)
	if counts[testupstream.KeySearch] != 2 || counts[testupstream.KeyEcho] != 0 {
		t.Errorf("the upstream executed %v; want search 2 times and echo never", counts)
	}
	if m := get(t, ops+"/metrics"); !strings.Contains(m, `tollgate_decisions_total{method="tools/call",outcome="rejected",tier=""} 6`) {
		t.Errorf("the legacy endpoint's rejections are not in the metrics")
	}
}

func attackResourceSpellings(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	alice := newMCPClient(t, base, map[string]string{"X-User": "alice"})
	alice.initialize("/mcp")
	spellings := []string{
		"file:///data/report.txt", "file://localhost/data/report.txt", "file:/data/report.txt",
		"file:data/report.txt", `file:\\\data\report.txt`, " file:///data/report.txt", "file:///data/report.txt\n",
		"file:///da\tta/report.txt", "FILE:///data/report.txt", "file:///data/./report.txt", "file:///data/x/../report.txt",
		"file:///data/%2e/report.txt",
	}
	var st []int
	for _, u := range spellings {
		st = append(st, alice.readResource("/mcp", u).Status)
	}
	if st[0] != http.StatusOK || count(st, http.StatusOK) != 1 {
		t.Errorf("shared 1 across %d spellings: statuses %v, want one 200 and the rest refused", len(spellings), st)
	}
	if n := settle(t, e.up)[testupstream.KeyReport]; n > 1 {
		t.Errorf("the upstream served the resource %d times, want at most 1", n)
	}
}

func attackMethodsAndBodies(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	addr := strings.TrimPrefix(base, "http://")
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`
	cases := []struct {
		request string
		want    int
	}{
		{"PUT /mcp HTTP/1.1\r\nHost: x\r\nX-User: a\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call, http.StatusMethodNotAllowed},
		{"PATCH /mcp HTTP/1.1\r\nHost: x\r\nX-User: a\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call, http.StatusMethodNotAllowed},
		{"GET /mcp HTTP/1.1\r\nHost: x\r\nX-User: a\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call, http.StatusBadRequest},
		{"DELETE /mcp HTTP/1.1\r\nHost: x\r\nX-User: a\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call, http.StatusBadRequest},
		{"HEAD /sse HTTP/1.1\r\nHost: x\r\nX-User: a\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call, http.StatusMethodNotAllowed},
		{"GET /sse HTTP/1.1\r\nHost: x\r\nX-User: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
		{"HEAD /mcp HTTP/1.1\r\nHost: x\r\nX-User: a\r\n\r\n", http.StatusMethodNotAllowed},
		{"TRACE /sse HTTP/1.1\r\nHost: x\r\nX-User: a\r\n\r\n", http.StatusMethodNotAllowed},
		{"PUT /sse HTTP/1.1\r\nHost: x\r\nX-User: a\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call, http.StatusMethodNotAllowed},
	}
	for _, c := range cases {
		if r := raw(t, addr, c.request); r.Status != c.want {
			t.Errorf("%s: %d, want %d", firstLine(c.request), r.Status, c.want)
		}
	}
	if n := settle(t, e.up)[testupstream.KeyEcho]; n != 0 {
		t.Errorf("the upstream executed echo %d times, want never", n)
	}
}

func attackUpgrade(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	addr := strings.TrimPrefix(base, "http://")
	for _, req := range []string{
		"GET /mcp HTTP/1.1\r\nHost: x\r\nX-User: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		"GET /sse HTTP/1.1\r\nHost: x\r\nX-User: a\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
	} {
		if r := raw(t, addr, req); r.Status != http.StatusBadRequest {
			t.Errorf("%s with Upgrade: %d, want 400", firstLine(req), r.Status)
		}
	}
}

func attackHopByHop(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	carol := newMCPClient(t, base, map[string]string{"X-User": "carol"})
	carol.initialize("/mcp")
	if r := carol.callTool("/mcp", "echo", "Connection", "X-User"); r.Status != http.StatusBadRequest {
		t.Errorf("Connection: X-User: %d, want 400", r.Status)
	}
	if r := carol.callTool("/mcp", "echo", "X_User", "mallory"); r.Status != http.StatusBadRequest {
		t.Errorf("X_User beside X-User: %d, want 400", r.Status)
	}
	if n := settle(t, e.up)[testupstream.KeyEcho]; n != 0 {
		t.Errorf("the upstream executed echo %d times, want never", n)
	}
}

func attackSlowBody(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), rawTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(rawTimeout))
	start := time.Now()
	fmt.Fprint(c, "POST /mcp HTTP/1.1\r\nHost: x\r\nX-User: slowpoke\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
	fmt.Fprint(c, `{"jsonrpc":"2.0","id":1,"method":"tools/call",`)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatalf("reading the answer to a stalled body: %v", err)
	}
	_ = resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != http.StatusRequestTimeout || took > 3*time.Second {
		t.Errorf("stalled body: %d after %v, want 408 after about 1s (http.bodyReadTimeout)", resp.StatusCode, took)
	}
	// The connection is closed: nothing more is read from it.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after the 408 the connection is still open (%v)", err)
	}
	if n := len(settle(t, e.up)); n != 0 {
		t.Errorf("the upstream executed %d things, want nothing", n)
	}
}

// attackStalledBodies: 300 anonymous connections each send most of a body and stall. The
// proxy holds at most its byte quota of them; an honest caller is served meanwhile.
func attackStalledBodies(t *testing.T, e attackEnv) {
	base, ops := e.proxy(t)
	addr := strings.TrimPrefix(base, "http://")
	const stalled = 300
	var wg sync.WaitGroup
	conns := make(chan net.Conn, stalled)
	for range stalled {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, rawTimeout)
			if err != nil {
				return
			}
			conns <- c
			_ = c.SetDeadline(time.Now().Add(rawTimeout))
			fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 65000\r\n\r\n%s", strings.Repeat(" ", 60000))
		})
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			_ = c.Close()
		}
	}()
	honest := newMCPClient(t, base, map[string]string{"X-User": "honest"})
	honest.initialize("/mcp")
	start := time.Now()
	if r := honest.callTool("/mcp", "echo"); r.Status != http.StatusOK {
		t.Errorf("an honest call beside %d stalled bodies: %d %s", stalled, r.Status, r.Body)
	}
	t.Logf("an honest call beside %d stalled bodies took %v", stalled, time.Since(start))
	if held := gauge(t, ops, "tollgate_buffered_body_bytes"); held > 2097152 {
		t.Errorf("body bytes held: %v, above http.maxBufferedBytes", held)
	}
	if n := settle(t, e.up)[testupstream.KeyEcho]; n != 1 {
		t.Errorf("the upstream executed echo %d times, want once (the honest call)", n)
	}
}

func attackStreams(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	// maxStreamsPerCaller 2, maxStreams 4.
	for i, want := range []struct {
		user   string
		status int
	}{{"alice", 200}, {"alice", 200}, {"alice", 429}, {"bob", 200}, {"bob", 200}, {"carol", 503}} {
		c, _, status := openStream(t, base, "/sse", want.user)
		if status != want.status {
			t.Errorf("stream %d (%s): %d, want %d", i+1, want.user, status, want.status)
		}
		if i == 5 && c == nil {
			continue
		}
	}
}

func attackUnknownPath(t *testing.T, e attackEnv) {
	base, _ := e.proxy(t)
	alice := newMCPClient(t, base, map[string]string{"X-User": "alice"})
	alice.initialize("/mcp")
	for _, p := range []string{"/messages", "/mcpx", "/mcp/x", "/admin", "/ssex"} {
		if r := alice.callTool(p, "echo"); r.Status != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", p, r.Status)
		}
	}
	if n := settle(t, e.up)[testupstream.KeyEcho]; n != 0 {
		t.Errorf("the upstream executed echo %d times, want never", n)
	}
}

// gauge reads a gauge's value from the metrics page.
func gauge(t *testing.T, ops, name string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(get(t, ops+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestAttackSmuggling: a HEAD (or GET) whose body is a whole second request, forwarded, makes
// an upstream that ignores bodies on those methods run the second request. The proxy never
// forwards such a body.
func TestAttackSmuggling(t *testing.T) {
	up := testupstream.StartNaive(t)
	base, _ := startProxy(t, fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: attack, name: smuggling}
upstream:
  url: %q
  passthroughPaths: [{path: /, pathType: Prefix}]
auth: {anonymous: {}}
`, up.Endpoint()))
	addr := strings.TrimPrefix(base, "http://")
	smuggled := "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
	for _, method := range []string{"HEAD", "GET", "DELETE", "OPTIONS"} {
		for _, path := range []string{"/mcp", "/other"} {
			req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", method, path, len(smuggled), smuggled)
			if r := raw(t, addr, req); r.Status != http.StatusBadRequest && r.Status != http.StatusMethodNotAllowed {
				t.Errorf("%s %s with a body: %d, want 400 or 405", method, path, r.Status)
			}
		}
	}
	if n := up.Executed(t, "POST /x"); n != 0 {
		t.Errorf("the upstream ran the smuggled request %d times", n)
	}
}

// TestAttackUpstreamTimeout: an upstream that never answers is answered 504 by the proxy, with
// a JSON-RPC error that echoes the request's id, after upstream.responseHeaderTimeout.
func TestAttackUpstreamTimeout(t *testing.T) {
	release := make(chan struct{})
	hang := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: hang, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { close(release); _ = srv.Close() })
	base, ops := startProxy(t, fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: attack, name: hang}
upstream: {url: "http://%s/mcp", responseHeaderTimeout: 300ms}
auth: {anonymous: {}}
`, ln.Addr()))
	c := newMCPClient(t, base, nil)
	start := time.Now()
	r := c.post("/mcp", `{"jsonrpc":"2.0","id":"t-1","method":"tools/call","params":{"name":"echo"}}`)
	if took := time.Since(start); r.Status != http.StatusGatewayTimeout || took > 3*time.Second {
		t.Errorf("an upstream that never answers: %d after %v, want 504 after about 300ms", r.Status, took)
	}
	if !strings.Contains(r.Body, `"id":"t-1"`) || !strings.Contains(r.Body, `"code":-32603`) {
		t.Errorf("504 body %s: want a JSON-RPC error echoing the id", r.Body)
	}
	if m := get(t, ops+"/metrics"); !strings.Contains(m, `tollgate_upstream_responses_total{class="timeout"} 1`) {
		t.Error("the timeout is not counted")
	}
}

// TestAttackDecisionLog: unidentified calls with huge names cost the log little: names are
// cut (and marked), and unidentified lines are written at a bounded rate.
func TestAttackDecisionLog(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
	base, ops := startProxy(t, fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: attack, name: log}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: memory}
rateLimiting:
  perUser: {maxTokens: 10, refillPeriod: 1h}
maxBodyBytes: 2097152
http: {maxBufferedBytesPerCaller: 4194304}
`, up.Endpoint()), func(s *Settings) { s.DecisionLog = logPath })
	c := newMCPClient(t, base, nil)
	// One call with a 1 MiB name, then a quick flood of unidentified calls.
	if r := c.callTool("/mcp", strings.Repeat("n", 1<<20)); r.Status != http.StatusUnauthorized {
		t.Fatalf("an unidentified call under a per-user limit: %d, want 401", r.Status)
	}
	const calls = 400
	start := time.Now()
	for range calls {
		if r := c.callTool("/mcp", strings.Repeat("m", 10<<10)); r.Status != http.StatusUnauthorized {
			t.Fatalf("an unidentified call under a per-user limit: %d, want 401", r.Status)
		}
	}
	elapsed := time.Since(start)
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var lines, size int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		lines++
		size += len(sc.Bytes())
		if lines == 1 && !strings.Contains(sc.Text(), `"nameTruncated":true`) {
			t.Errorf("the 1 MiB name is not marked truncated: %.200s", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("a decision-log line is longer than 64 KiB: %v", err)
	}
	// At most the burst, and the rate over the time the flood took.
	allowed := enforce.UnidentifiedLogBurst + int(enforce.UnidentifiedLogRate*elapsed.Seconds()) + 2
	if lines > allowed || size > allowed*(10<<10+200) {
		t.Errorf("%d unidentified calls in %v wrote %d lines, %d bytes; want at most %d lines", calls+1, elapsed, lines, size, allowed)
	}
	if m := get(t, ops+"/metrics"); !strings.Contains(m, "tollgate_decision_log_suppressed_total") || strings.Contains(m, "tollgate_decision_log_suppressed_total 0\n") {
		t.Error("suppressed decision-log lines are not counted")
	}
	if n := len(up.Counts(t)); n != 0 {
		t.Errorf("the upstream executed %d things, want nothing", n)
	}
}

// TestAttackReload: a reload that would rename every bucket (server identity, key prefix,
// user-hash key, store) would hand an exhausted user a full bucket. It is refused, logged and
// counted, and the running config stays; a change of limits alone still applies live.
func TestAttackReload(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	redisSrv := testredis.Start(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("first key, 16+ bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "proxy.yaml")
	config := func(ns, name, prefix, key string, maxTokens int) string {
		return fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: %s, name: %s}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, keyPrefix: %s, userHashKeyFile: %q, timeout: 2s}
rateLimiting:
  failurePolicy: Deny
  tools: [{name: search, perUser: {maxTokens: %d, refillPeriod: 1h}}]
`, ns, name, up.Endpoint(), redisSrv.Addr, prefix, key, maxTokens)
	}
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(config("attack", "reload", "tollgate", keyFile, 1))
	base, ops := startProxy(t, config("attack", "reload", "tollgate", keyFile, 1), func(s *Settings) {
		s.ConfigPath = path
		s.ReloadInterval = 20 * time.Millisecond
	})
	alice := newMCPClient(t, base, map[string]string{"X-User": "alice"})
	alice.initialize("/mcp")
	if st := []int{alice.callTool("/mcp", "search").Status, alice.callTool("/mcp", "search").Status}; !cmp.Equal(st, []int{200, 429}) {
		t.Fatalf("perUser 1: %v, want [200 429]", st)
	}
	reloads := func(result string) float64 {
		return metricValue(t, ops, `tollgate_config_reloads_total{result="`+result+`"}`)
	}
	for i, next := range []struct{ what, cfg string }{
		{"server.name", config("attack", "reload-2", "tollgate", keyFile, 1)},
		{"server.namespace", config("attack-2", "reload", "tollgate", keyFile, 1)},
		{"sessionStorage.keyPrefix", config("attack", "reload", "other", keyFile, 1)},
		{"sessionStorage.userHashKeyFile", config("attack", "reload", "tollgate", filepath.Join(dir, "other-key"), 1)},
	} {
		write(next.cfg)
		waitUntil(t, "the reload of "+next.what+" to be refused", func() bool { return reloads("refused") == float64(i+1) })
		if st := alice.callTool("/mcp", "search").Status; st != http.StatusTooManyRequests {
			t.Errorf("after a reload changing %s: %d, want 429 (the exhausted bucket stays)", next.what, st)
		}
	}
	if n := up.Executed(t, testupstream.KeySearch); n != 1 {
		t.Errorf("the upstream executed search %d times, want 1", n)
	}
	// Limits alone reload live.
	write(config("attack", "reload", "tollgate", keyFile, 5))
	waitUntil(t, "a change of limits to apply", func() bool { return reloads("applied") >= 1 })
	if r := alice.callTool("/mcp", "search"); !strings.Contains(r.Header.Get("RateLimit-Policy"), "q=5") {
		t.Errorf("after a limits-only reload: RateLimit-Policy %q, want q=5", r.Header.Get("RateLimit-Policy"))
	}
}

// metricValue reads one sample (name with labels, as exposed) from the metrics page; 0 when
// absent.
func metricValue(t *testing.T, ops, sample string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(get(t, ops+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return 0
}
