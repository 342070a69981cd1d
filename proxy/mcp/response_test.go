package mcp

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func TestErrorResponse(t *testing.T) {
	cases := map[string]struct {
		reason  string
		id      json.RawMessage
		code    int
		message string
		data    any
		want    string
	}{
		"NilID": {
			reason:  "Without an id the id member is omitted, not null.",
			code:    CodeParseError,
			message: "Parse error",
			want:    `{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"}}`,
		},
		"NumberID": {
			reason:  "A number id is echoed byte for byte.",
			id:      raw("1.0"),
			code:    CodeInvalidParams,
			message: "Invalid params",
			want:    `{"jsonrpc":"2.0","id":1.0,"error":{"code":-32602,"message":"Invalid params"}}`,
		},
		"BigNumberID": {
			reason:  "A big number id is echoed byte for byte.",
			id:      raw("123456789012345678901234567890"),
			code:    -32000,
			message: "Rate limited",
			want:    `{"jsonrpc":"2.0","id":123456789012345678901234567890,"error":{"code":-32000,"message":"Rate limited"}}`,
		},
		"StringID": {
			reason:  "A string id is echoed byte for byte, escapes included.",
			id:      raw(`"a\u0062c"`),
			code:    CodeInvalidRequest,
			message: "Invalid Request",
			want:    `{"jsonrpc":"2.0","id":"a\u0062c","error":{"code":-32600,"message":"Invalid Request"}}`,
		},
		"NullID": {
			reason:  "An id null is echoed as null.",
			id:      raw("null"),
			code:    CodeInvalidRequest,
			message: "Invalid Request",
			want:    `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request"}}`,
		},
		"InvalidID": {
			reason:  "An id that is not JSON is treated as absent.",
			id:      raw("{"),
			code:    CodeInvalidRequest,
			message: "Invalid Request",
			want:    `{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"}}`,
		},
		"Data": {
			reason:  "data is marshalled, and the message escaped.",
			id:      raw(`"abc"`),
			code:    -32000,
			message: `Rate "limit"`,
			data:    map[string]any{"retryAfter": 3},
			want:    `{"jsonrpc":"2.0","id":"abc","error":{"code":-32000,"message":"Rate \"limit\"","data":{"retryAfter":3}}}`,
		},
		"BadData": {
			reason:  "data that cannot be marshalled is left out.",
			id:      raw("2"),
			code:    -32000,
			message: "x",
			data:    make(chan int),
			want:    `{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"x"}}`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := string(ErrorResponse(tc.id, tc.code, tc.message, tc.data))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nErrorResponse(...): -want, +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestBatchErrorResponse(t *testing.T) {
	cases := map[string]struct {
		reason string
		msgs   []Message
		want   []byte
	}{
		"RequestsOnly": {
			reason: "One error per request, in order; notifications and responses get none.",
			msgs: []Message{
				request("1", ratelimit.MethodToolsCall, "a"),
				notification(ratelimit.MethodToolsCall, "b"),
				response(`"s"`),
				request(`"x"`, "ping", ""),
			},
			want: []byte(`[{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Rate limited"}},` +
				`{"jsonrpc":"2.0","id":"x","error":{"code":-32000,"message":"Rate limited"}}]`),
		},
		"NoRequests": {
			reason: "Nothing to answer is nil, never an empty array.",
			msgs:   []Message{notification(ratelimit.MethodToolsCall, "b"), response("1")},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := BatchErrorResponse(tc.msgs, -32000, "Rate limited", nil)
			if diff := cmp.Diff(string(tc.want), string(got)); diff != "" {
				t.Errorf("%s\nBatchErrorResponse(...): -want, +got:\n%s", tc.reason, diff)
			}
			if tc.want == nil && got != nil {
				t.Errorf("%s\nBatchErrorResponse(...): got %q, want nil", tc.reason, got)
			}
		})
	}
}

func TestToolErrorResult(t *testing.T) {
	cases := map[string]struct {
		reason string
		id     json.RawMessage
		text   string
		meta   any
		want   string
	}{
		"StringID": {
			reason: "A CallToolResult with isError, one text content and _meta; the id echoed byte for byte.",
			id:     raw(`"a\u0062c"`),
			text:   "Rate limit reached for web_search (20 calls per minute per user). Try again in 12 s.",
			meta:   map[string]any{"retryAfterMs": 11001, "limit": "tool:web_search:user"},
			want: `{"jsonrpc":"2.0","id":"a\u0062c","result":{"content":[{"type":"text","text":"Rate limit reached for web_search (20 calls per minute per user). Try again in 12 s."}],` +
				`"isError":true,"_meta":{"limit":"tool:web_search:user","retryAfterMs":11001}}}`,
		},
		"NumberIDNoMeta": {
			reason: "A number id keeps its spelling; no _meta when nil; the text is escaped.",
			id:     raw("1.0"),
			text:   `say "no"`,
			want:   `{"jsonrpc":"2.0","id":1.0,"result":{"content":[{"type":"text","text":"say \"no\""}],"isError":true}}`,
		},
		"BadMeta": {
			reason: "_meta that cannot be marshalled is left out.",
			id:     raw("2"),
			text:   "x",
			meta:   make(chan int),
			want:   `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"x"}],"isError":true}}`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := string(ToolErrorResult(tc.id, tc.text, tc.meta))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nToolErrorResult(...): -want, +got:\n%s", tc.reason, diff)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("%s\nToolErrorResult(...) is not JSON: %s", tc.reason, got)
			}
		})
	}
}

func TestBatchResponse(t *testing.T) {
	msgs := []Message{
		request("1", ratelimit.MethodToolsCall, "a"),
		request(`"p"`, ratelimit.MethodPromptsGet, "b"),
		notification(ratelimit.MethodToolsCall, "c"),
		response("9"),
	}
	got := BatchResponse(msgs, func(b []byte, m Message) []byte {
		if m.Method == ratelimit.MethodToolsCall {
			return AppendToolErrorResult(b, m.ID, "limited", nil)
		}
		return AppendError(b, m.ID, 429, "Rate limit exceeded", nil)
	})
	want := `[{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"limited"}],"isError":true}},` +
		`{"jsonrpc":"2.0","id":"p","error":{"code":429,"message":"Rate limit exceeded"}}]`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("Each request answered in its own form, in order; notifications and responses not at all.\n-want, +got:\n%s", diff)
	}
}

// TestParseErrorResponse checks the ids Parse hands back are echoed exactly as the client sent them.
func TestParseErrorResponse(t *testing.T) {
	cases := map[string]struct {
		reason string
		body   string
		want   string
	}{
		"FloatID": {
			reason: "The id 1.0 comes back as 1.0.",
			body:   `{"jsonrpc":"2.0","id":1.0,"method":"tools/call"}`,
			want:   `{"jsonrpc":"2.0","id":1.0,"error":{"code":-32602,"message":"Invalid params","data":"params must be an object"}}`,
		},
		"StringID": {
			reason: `The id "abc" comes back as "abc".`,
			body:   `{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":""}}`,
			want:   `{"jsonrpc":"2.0","id":"abc","error":{"code":-32602,"message":"Invalid params","data":"params.name must not be empty"}}`,
		},
		"NegativeID": {
			reason: "The id -5 comes back as -5.",
			body:   `{"jsonrpc":"2.0","id":-5,"method":"tools/call","params":{"uri":"x"}}`,
			want:   `{"jsonrpc":"2.0","id":-5,"error":{"code":-32602,"message":"Invalid params","data":"params.name is missing"}}`,
		},
		"ParseError": {
			reason: "A parse error echoes no id.",
			body:   `{"jsonrpc":"2.0","id":1,`,
			want:   `{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error","data":"expected a string key at offset 24"}}`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body))
			if err == nil {
				t.Fatalf("%s\nParse(%q): no error", tc.reason, tc.body)
			}
			if diff := cmp.Diff(tc.want, string(err.Response())); diff != "" {
				t.Errorf("%s\nResponse(): -want, +got:\n%s", tc.reason, diff)
			}
		})
	}
}
