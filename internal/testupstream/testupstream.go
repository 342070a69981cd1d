// Package testupstream starts real upstream servers on 127.0.0.1 for tests of the proxy, each
// of which counts what it EXECUTED: a test can then assert what the upstream really ran, not
// only what status its client saw.
//
//   - StartGo: the go-sdk MCP server (Streamable HTTP at /mcp, legacy HTTP+SSE at /sse);
//   - StartTS: the official TypeScript SDK on Express 5, as its README writes it (node);
//   - StartNaive: a plain HTTP/1.1 server that reads a body only for POST/PUT/PATCH.
//
// The MCP upstreams serve the tools echo, search and slow, the prompt summary and the
// resources file:///data/report.txt and file:///motd. Their counter keys are
// "tools/call <name>", "prompts/get <name>" and "resources/read <uri as the handler got it>".
// The naive upstream's keys are "METHOD TARGET" as the request line carried them.
package testupstream

import (
	"maps"
	"sync"
	"testing"
)

// Counter keys of the MCP upstreams.
const (
	KeyEcho   = "tools/call echo"
	KeySearch = "tools/call search"
	KeySlow   = "tools/call slow"
	KeyPrompt = "prompts/get summary"
	KeyReport = "resources/read file:///data/report.txt"
	KeyMOTD   = "resources/read file:///motd"
)

// Upstream is a running test upstream. It stops when the test that started it ends.
type Upstream struct {
	// URL is the base URL, http://127.0.0.1:PORT, without a path.
	URL string

	counts func() (map[string]int, error)
	reset  func() error
}

// Endpoint is the Streamable HTTP endpoint: URL + "/mcp".
func (u *Upstream) Endpoint() string { return u.URL + "/mcp" }

// Counts returns what the upstream executed so far, by key (never nil).
func (u *Upstream) Counts(t testing.TB) map[string]int {
	t.Helper()
	got, err := u.counts()
	if err != nil {
		t.Fatalf("reading the counts of the upstream at %s: %v", u.URL, err)
	}
	if got == nil {
		got = map[string]int{}
	}
	return got
}

// Executed returns how often the upstream executed key.
func (u *Upstream) Executed(t testing.TB, key string) int {
	t.Helper()
	return u.Counts(t)[key]
}

// Reset sets every count back to zero.
func (u *Upstream) Reset(t testing.TB) {
	t.Helper()
	if err := u.reset(); err != nil {
		t.Fatalf("resetting the counts of the upstream at %s: %v", u.URL, err)
	}
}

// counter counts in-process executions, for the upstreams that run in the test binary.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func newCounter() *counter { return &counter{n: map[string]int{}} }

func (c *counter) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[key]++
}

func (c *counter) snapshot() (map[string]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n), nil
}

func (c *counter) clear() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.n)
	return nil
}

// inProcess is an Upstream whose counts live in c.
func inProcess(url string, c *counter) *Upstream {
	return &Upstream{URL: url, counts: c.snapshot, reset: c.clear}
}
