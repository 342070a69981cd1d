package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawTimeout bounds every raw exchange.
const rawTimeout = 10 * time.Second

// rawResponse is what a test checks of a raw exchange.
type rawResponse struct {
	Status int
	Header http.Header
	Body   string
}

// raw sends one request exactly as written (request line, headers and body: no client
// normalises the path or drops a header) on a new connection to addr and reads the response
// with a bounded wait.
func raw(t testing.TB, addr, request string) rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, rawTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(rawTimeout))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatalf("write: %v", err)
	}
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %q: %v", firstLine(request), err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// mcpClient speaks Streamable HTTP (2025-11-25) through the proxy with raw requests, so that a
// test controls the path, the method and every header.
type mcpClient struct {
	t       testing.TB
	addr    string            // the proxy's host:port
	headers map[string]string // sent on every request (identity, ...)
	session string            // Mcp-Session-Id once initialised
}

func newMCPClient(t testing.TB, base string, headers map[string]string) *mcpClient {
	return &mcpClient{t: t, addr: strings.TrimPrefix(base, "http://"), headers: headers}
}

// request writes a request with the client's headers, its session and a JSON body.
func (c *mcpClient) request(method, target, body string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, c.addr)
	for k, v := range c.headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if c.session != "" {
		fmt.Fprintf(&b, "Mcp-Session-Id: %s\r\n", c.session)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", extra[i], extra[i+1])
	}
	if body != "" || method == http.MethodPost {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(body)
	return b.String()
}

// post sends a JSON-RPC body to target.
func (c *mcpClient) post(target, body string, extra ...string) rawResponse {
	c.t.Helper()
	return raw(c.t, c.addr, c.request(http.MethodPost, target, body, extra...))
}

// initialize opens a session at target (when the upstream keeps sessions).
func (c *mcpClient) initialize(target string) {
	c.t.Helper()
	resp := c.post(target, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"attack","version":"1"}}}`)
	if resp.Status != http.StatusOK {
		c.t.Fatalf("initialize at %s: %d %s", target, resp.Status, resp.Body)
	}
	c.session = resp.Header.Get("Mcp-Session-Id")
	if r := c.post(target, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); r.Status/100 != 2 {
		c.t.Fatalf("notifications/initialized at %s: %d %s", target, r.Status, r.Body)
	}
}

var callID int

// callTool posts a tools/call of name to target and returns the response.
func (c *mcpClient) callTool(target, name string, extra ...string) rawResponse {
	c.t.Helper()
	callID++
	return c.post(target, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"text":"x"}}}`, callID, name), extra...)
}

// readResource posts a resources/read of uri to target.
func (c *mcpClient) readResource(target, uri string) rawResponse {
	c.t.Helper()
	callID++
	return c.post(target, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":%s}}`, callID, jsonString(uri)))
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
