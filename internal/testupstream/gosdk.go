package testupstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxSlow bounds the slow tool's sleep.
const maxSlow = 10 * time.Second

// GoOptions configures StartGo.
type GoOptions struct {
	// Stateless serves Streamable HTTP without sessions: the only mode in which go-sdk v1.8
	// serves protocol 2026-07-28. The stateful default tops out at 2025-11-25.
	Stateless bool
}

type textIn struct {
	Text string `json:"text"`
}

type slowIn struct {
	MS   int    `json:"ms"`
	Text string `json:"text,omitempty"`
}

// StartGo serves a go-sdk (v1.8) MCP server on 127.0.0.1 with a free port:
//
//   - Streamable HTTP at /mcp (mcp.NewStreamableHTTPHandler);
//   - the legacy HTTP+SSE transport (2024-11-05) at /sse (mcp.NewSSEHandler). Its GET opens
//     the stream, whose endpoint event announces the request's own path with a query,
//     "/sse?sessionid=<id>" (lower-case sessionid, unlike the TypeScript SDK's
//     "/messages?sessionId=<id>"); the client POSTs its messages there.
//
// Both keep go-sdk's defaults, including its DNS-rebinding protection (403 for a request that
// reaches the loopback listener with a non-loopback Host). It stops when the test ends.
func StartGo(t testing.TB, opts GoOptions) *Upstream {
	t.Helper()
	c := newCounter()
	srv := mcp.NewServer(&mcp.Implementation{Name: "testupstream-go", Version: "1.0.0"}, nil)
	for _, name := range []string{"echo", "search"} {
		mcp.AddTool(srv, &mcp.Tool{Name: name, Description: name + " the text"},
			func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
				c.add("tools/call " + name)
				return textResult(name + ":" + in.Text), nil, nil
			})
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "slow", Description: "Sleeps for ms milliseconds (at most 10 s)"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, any, error) {
			c.add(KeySlow)
			timer := time.NewTimer(min(max(time.Duration(in.MS)*time.Millisecond, 0), maxSlow))
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			return textResult("slow:" + in.Text), nil, nil
		})
	srv.AddPrompt(&mcp.Prompt{Name: "summary", Description: "Summarise"},
		func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			c.add(KeyPrompt)
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "summarise"}}}}, nil
		})
	for _, r := range []struct{ name, uri, text string }{
		{"report", "file:///data/report.txt", "report"},
		{"motd", "file:///motd", "hello"},
	} {
		// go-sdk looks resources up by the exact URI string: only these strings reach here.
		srv.AddResource(&mcp.Resource{URI: r.uri, Name: r.name, MIMEType: "text/plain"},
			func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
				c.add("resources/read " + req.Params.URI)
				return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: r.text}}}, nil
			})
	}
	getServer := func(*http.Request) *mcp.Server { return srv }
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{Stateless: opts.Stateless}))
	mux.Handle("/sse", mcp.NewSSEHandler(getServer, nil))
	ts := httptest.NewServer(mux) // 127.0.0.1:0
	t.Cleanup(func() {
		// Open SSE streams would hold Close until they end: cut them.
		ts.CloseClientConnections()
		ts.Close()
	})
	return inProcess(ts.URL, c)
}

func textResult(text string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}
}
