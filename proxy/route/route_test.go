package route

import (
	"bufio"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
)

func TestMatch(t *testing.T) {
	rules := []v1alpha1.PassthroughPath{
		{Path: "/healthz"},
		{Path: "/static", PathType: v1alpha1.PathTypePrefix},
		{Path: "/mcp", PathType: v1alpha1.PathTypePrefix}, // covers the endpoint: the endpoint wins
	}
	tbl, err := New("/mcp", []string{"/messages"}, rules)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		Kind Kind
		Path string
	}
	cases := map[string]struct {
		reason string
		in     string
		want   result
	}{
		"Endpoint":          {"The endpoint.", "/mcp", result{Endpoint, "/mcp"}},
		"EndpointCase":      {"Express routes case-insensitively.", "/MCP", result{Endpoint, "/mcp"}},
		"EndpointSlash":     {"Express ignores a trailing slash.", "/Mcp/", result{Endpoint, "/mcp"}},
		"EndpointEscaped":   {"Escapes are decoded.", "/%4dcp", result{Endpoint, "/mcp"}},
		"EndpointDots":      {"Dot segments resolve.", "/static/../mcp", result{Endpoint, "/mcp"}},
		"EndpointParams":    {"';' parameters are dropped.", "/mcp;a=b", result{Endpoint, "/mcp"}},
		"EndpointFold":      {"Unicode folding too: the long s folds to s (never narrower than Express).", "/MCP", result{Endpoint, "/mcp"}},
		"Messages":          {"A configured message endpoint.", "/messages", result{Messages, "/messages"}},
		"MessagesSpelling":  {"In any spelling.", "//Messages/", result{Messages, "/messages"}},
		"PassExact":         {"An exact pass-through path.", "/healthz", result{Passthrough, "/healthz"}},
		"PassExactCase":     {"Pass-through rules are case-sensitive.", "/HEALTHZ", result{NotFound, ""}},
		"PassPrefix":        {"A prefix covers the paths below it.", "/static/a/b.js", result{Passthrough, "/static/a/b.js"}},
		"PassPrefixItself":  {"And itself.", "/static", result{Passthrough, "/static"}},
		"PassPrefixElement": {"Element by element: /staticx is not below /static.", "/staticx", result{NotFound, ""}},
		"PassCleaned":       {"Forwarded under the cleaned path.", "/static//a/./b%2Ejs", result{Passthrough, "/static/a/b.js"}},
		"PassEscapedOut":    {"A cleaned path is escaped again to be sent.", "/static/a%20b", result{Passthrough, "/static/a%20b"}},
		"NotFound":          {"Anything else is 404.", "/admin", result{NotFound, ""}},
		"BelowEndpoint":     {"Below the endpoint is not the endpoint; the prefix rule passes it.", "/mcp/x", result{Passthrough, "/mcp/x"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m, err := tbl.Match(tc.in)
			if err != nil {
				t.Fatalf("%s\nMatch(%q): %v", tc.reason, tc.in, err)
			}
			if diff := cmp.Diff(tc.want, result{m.Kind, m.Path}); diff != "" {
				t.Errorf("%s\nMatch(%q): -want +got:\n%s", tc.reason, tc.in, diff)
			}
		})
	}
}

func TestLearn(t *testing.T) {
	tbl, err := New("/mcp", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := tbl.Match("/messages"); m.Kind != NotFound {
		t.Fatalf("before learning: %v, want not found", m.Kind)
	}
	if _, err := tbl.Learn("/messages"); err != nil {
		t.Fatal(err)
	}
	if m, _ := tbl.Match("/MESSAGES/"); m.Kind != Messages || m.Path != "/messages" {
		t.Errorf("after learning: %v %q, want messages /messages", m.Kind, m.Path)
	}
	for i := range MaxLearned - 1 {
		if _, err := tbl.Learn("/m" + string(rune('a'+i))); err != nil {
			t.Fatalf("learning path %d: %v", i, err)
		}
	}
	if _, err := tbl.Learn("/one-too-many"); err == nil {
		t.Errorf("learning more than %d paths: no error", MaxLearned)
	}
}

func TestNewRefusesUncleanRules(t *testing.T) {
	for _, p := range []string{"/a/", "/a/../b", "/a%20b", "//a", "relative"} {
		if _, err := New("/mcp", nil, []v1alpha1.PassthroughPath{{Path: p}}); err == nil {
			t.Errorf("rule %q: no error; a rule that cleaning changes could never match", p)
		}
	}
}

// routedByServeMux reports whether Go's ServeMux, with a handler registered at "/mcp", runs
// that handler for a POST to target (no redirect).
func routedByServeMux(target string) bool {
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(http.ResponseWriter, *http.Request) {})
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	_, pattern := mux.Handler(&http.Request{Method: http.MethodPost, URL: u, Host: "x"})
	return pattern == "/mcp"
}

// express asks the TypeScript SDK upstream on Express 5 whether it routes a POST to target to
// its /mcp handler: an unrouted path is Express's own 404 ("Cannot POST").
type express struct{ addr string }

func (e express) routes(t testing.TB, target string) (routed, ok bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false, false // node refused the request line
	}
	defer func() { _ = resp.Body.Close() }()
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	if resp.StatusCode == http.StatusBadRequest && !strings.Contains(string(buf[:n]), "jsonrpc") {
		return false, false // node's own 400 for a target it cannot parse
	}
	return resp.StatusCode != http.StatusNotFound || !strings.Contains(string(buf[:n]), "Cannot POST"), true
}

// checkEndpointCovers fails when a framework routes target to its /mcp handler but tbl does
// not call it the endpoint: such a request would be forwarded unparsed and unlimited.
func checkEndpointCovers(t testing.TB, tbl *Table, e *express, target string) {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return // the proxy's server answers 400 before routing
	}
	m, err := tbl.Match(u.EscapedPath())
	isEndpoint := err == nil && m.Kind == Endpoint
	if routedByServeMux(target) && !isEndpoint {
		t.Errorf("ServeMux routes %q to /mcp; the proxy says %v (err %v)", target, m.Kind, err)
	}
	if e == nil {
		return
	}
	if routed, ok := e.routes(t, target); ok && routed && !isEndpoint {
		t.Errorf("Express routes %q to /mcp; the proxy says %v (err %v)", target, m.Kind, err)
	}
}

var endpointSeeds = []string{
	"/mcp", "/MCP", "/mcp/", "/Mcp/", "/MCP/", "/mcp?x=1", "/mcp;x", "/mcp%2F", "//mcp", "/mcp/.", "/./mcp",
	"/x/../mcp", "/%6dcp", "/%6Dcp/", "/mcp%00", "/mcp%20", "/mcp.", "/mcp//", "/m%63p", "/mcp#x", "/mcp/..",
	"/mcp\\", "/%2fmcp", "/mcp%3Bx", "/mcp/?", "/other", "/mcpx", "/mc", "/mcp/x",
}

// TestEndpointCoversFrameworks: every spelling that Express 5 (the TypeScript SDK's stack) or
// Go's ServeMux routes to their /mcp handler is the endpoint to the proxy.
func TestEndpointCoversFrameworks(t *testing.T) {
	tbl, err := New("/mcp", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	up := testupstream.StartTS(t)
	e := &express{addr: strings.TrimPrefix(up.URL, "http://")}
	routedSomewhere := 0
	for _, target := range endpointSeeds {
		checkEndpointCovers(t, tbl, e, target)
		if routed, ok := e.routes(t, target); ok && routed {
			routedSomewhere++
		}
	}
	// The checker must be able to fail: a table that knows only the exact path misses what
	// Express routes.
	if routedSomewhere < 4 {
		t.Errorf("Express routed only %d seed spellings to /mcp; the test cannot tell anything", routedSomewhere)
	}
	exact := &Table{endpoint: "/mcp", endpointClean: "/mcp-exact-only", learned: map[string]string{}}
	ft := &fakeT{TB: t}
	for _, target := range endpointSeeds {
		checkEndpointCovers(ft, exact, e, target)
	}
	if !ft.failed {
		t.Error("checkEndpointCovers passed a table that does not know the endpoint")
	}
}

// FuzzEndpoint: for any request target, if Express or ServeMux would run the /mcp handler, the
// proxy's table says Endpoint.
func FuzzEndpoint(f *testing.F) {
	for _, s := range endpointSeeds {
		f.Add(s)
	}
	tbl, err := New("/mcp", nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	up := testupstream.StartTS(f)
	e := &express{addr: strings.TrimPrefix(up.URL, "http://")}
	f.Fuzz(func(t *testing.T, target string) {
		if target == "" || target[0] != '/' || len(target) > 256 || strings.ContainsAny(target, " \r\n\t") {
			return
		}
		for i := 0; i < len(target); i++ {
			if target[i] < 0x21 || target[i] > 0x7e {
				return // not a request target node accepts
			}
		}
		checkEndpointCovers(t, tbl, e, target)
	})
}

// fakeT records failures instead of failing: for tests of a checker.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}
