package testupstream

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tsClientTimeout bounds one run of the TypeScript client (node loads the SDK; the machine is
// shared).
const tsClientTimeout = 30 * time.Second

// TSCall is what the official TypeScript SDK client handed its caller for one callTool:
// a result, or the error it threw.
type TSCall struct {
	Result *TSResult `json:"result,omitempty"`
	Error  *TSError  `json:"error,omitempty"`
}

// TSResult is a CallToolResult as the SDK returned it.
type TSResult struct {
	IsError bool           `json:"isError"`
	Text    string         `json:"text"` // its text contents, joined
	Meta    map[string]any `json:"meta"`
}

// TSError is a thrown error: its class, its code (an HTTP status for StreamableHTTPError, the
// JSON-RPC code for McpError), message and data.
type TSError struct {
	Name    string `json:"name"`
	Code    any    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data"`
}

// RunTSClient runs ts/client.mjs: the official TypeScript SDK client connects to endpoint
// (Streamable HTTP) with the header X-User: user and calls tool n times. It needs node and
// ts/node_modules, as StartTS does.
func RunTSClient(t testing.TB, endpoint, user, tool string, n int) []TSCall {
	t.Helper()
	node, dir := tsPrerequisites(t)
	ctx, cancel := context.WithTimeout(context.Background(), tsClientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", endpoint, user, tool, strconv.Itoa(n))
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the TypeScript SDK client: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	var calls []TSCall
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var c TSCall
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("the TypeScript SDK client printed %q: %v", line, err)
		}
		calls = append(calls, c)
	}
	return calls
}
