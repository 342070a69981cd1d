package enforce

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// exchangeResult is a whole response as a client receives it: status, the headers a
// rejection carries, and the body, decoded (Body) and byte for byte (Raw).
type exchangeResult struct {
	Status      int
	Forwarded   bool
	ContentType string
	RetryAfter  string
	RateLimit   string
	Policy      string
	Body        any
}

func (f *fixture) exchange(t *testing.T, c call) (exchangeResult, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(c.body))
	r.RemoteAddr = "127.0.0.1:5555"
	r.Header.Set("Accept", "application/json, text/event-stream")
	if c.user != "" {
		r.Header.Set("X-User", c.user)
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	before := f.upstream.Load()
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	res := exchangeResult{
		Status: w.Code, Forwarded: f.upstream.Load() > before, ContentType: w.Header().Get("Content-Type"),
		RetryAfter: w.Header().Get("Retry-After"), RateLimit: w.Header().Get("RateLimit"), Policy: w.Header().Get("RateLimit-Policy"),
	}
	if res.Forwarded {
		return res, ""
	}
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &res.Body); err != nil {
			t.Fatalf("response body is not JSON: %q", w.Body.String())
		}
	}
	return res, w.Body.String()
}

func toolResult(id any, text string, meta map[string]any) map[string]any {
	m := map[string]any{"jsonrpc": "2.0", "result": map[string]any{
		"content": []any{map[string]any{"type": "text", "text": text}},
		"isError": true,
		"_meta":   meta,
	}}
	if id != nil {
		m["id"] = id
	}
	return m
}

func rejectData(limit, scope string, secs, ms float64) map[string]any {
	return map[string]any{"retryAfterSeconds": secs, "retryAfterMs": ms, "limit": limit, "scope": scope}
}

func promptGet(id, name string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"prompts/get","params":{"name":"` + name + `"}}`
}

func resourceRead(id, uri string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"resources/read","params":{"uri":"` + uri + `"}}`
}

// TestRejectionForms checks the whole answer to a rejected call in each form: status, content
// type, headers and body (the rejected call is always the last one of a case).
func TestRejectionForms(t *testing.T) {
	toolResultForm := v1alpha1.ProxyResponses{ToolRejection: v1alpha1.ToolRejectionToolResult}
	webSearch := &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "web_search", PerUser: bucket(20, time.Minute)}}}
	shared1 := &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute)}
	// 20 calls empty alice's bucket of 20 per minute: the next token is 3 s away.
	fill := func(cs ...call) []call {
		out := make([]call, 0, 20+len(cs))
		for i := range 20 {
			out = append(out, call{user: "alice", body: toolCall(jsonNumber(i), "web_search")})
		}
		return append(out, cs...)
	}
	batchText := "Rate limit reached for calls to this server (6 tokens per minute, shared by all users; the batch takes 5). " +
		"This call was sent in a batch, which is refused as a whole. Try again in 20 s."
	userPolicy := `"tool:web_search:user";q=20;w=60`
	userLevel := `"tool:web_search:user";r=0;t=3`
	cases := map[string]struct {
		reason  string
		cfg     *v1alpha1.RateLimitConfig
		resp    v1alpha1.ProxyResponses
		calls   []call
		want    exchangeResult
		wantRaw string // when set, the body byte for byte
	}{
		"ErrorFormDefault": {
			reason: "By default a rejected tools/call is a 429 with the JSON-RPC error: code 429, retryAfterSeconds and retryAfterMs (SEP-3304), the limit and its scope.",
			cfg:    webSearch,
			calls:  fill(call{user: "alice", body: toolCall("7", "web_search")}),
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "3", Policy: userPolicy, RateLimit: userLevel,
				Body: rejection(float64(7), "tool:web_search:user", "perUser", 3, 3000)},
		},
		"ErrorFormStatus200": {
			reason: "rejectStatus 200 sends the same error with HTTP 200, for clients that drop a 429's body.",
			cfg:    webSearch,
			resp:   v1alpha1.ProxyResponses{RejectStatus: 200},
			calls:  fill(call{user: "alice", body: toolCall("7", "web_search")}),
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "3", Policy: userPolicy, RateLimit: userLevel,
				Body: rejection(float64(7), "tool:web_search:user", "perUser", 3, 3000)},
		},
		"RetryAfterMsRoundsUp": {
			reason: "retryAfterMs is the exact wait rounded up to whole milliseconds: 1/7 s is 143 ms (Retry-After 1 s).",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(7, time.Second)},
			calls:  append(repeat(7, call{body: toolCall("1", "x")}), call{body: toolCall("8", "x")}),
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "1", Policy: `"shared";q=7;w=1`, RateLimit: `"shared";r=0;t=1`,
				Body: rejection(float64(8), "shared", "shared", 1, 143)},
		},
		"ToolResultSingle": {
			reason: "With ToolResult a rejected tools/call is HTTP 200 with a CallToolResult (isError, one text naming the limit, its rate and the wait, _meta with retryAfterMs); the RateLimit headers and Retry-After are still sent.",
			cfg:    webSearch,
			resp:   toolResultForm,
			calls:  fill(call{user: "alice", body: toolCall("7", "web_search")}),
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "3", Policy: userPolicy, RateLimit: userLevel,
				Body: toolResult(float64(7), "Rate limit reached for web_search (20 calls per minute per user). Try again in 3 s.",
					rejectData("tool:web_search:user", "perUser", 3, 3000))},
		},
		"ToolResultEchoesIDExactly": {
			reason: "The result echoes the request's id byte for byte, as the error form does.",
			cfg:    shared1,
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: toolCall(`"a\u0062c"`, "x")}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`,
				Body: toolResult("abc", "Rate limit reached for calls to this server (1 call per minute, shared by all users). Try again in 60 s.",
					rejectData("shared", "shared", 60, 60000))},
			wantRaw: `{"jsonrpc":"2.0","id":"a\u0062c","result":{"content":[{"type":"text","text":"Rate limit reached for calls to this server (1 call per minute, shared by all users). Try again in 60 s."}],"isError":true,"_meta":{"limit":"shared","retryAfterMs":60000,"retryAfterSeconds":60,"scope":"shared"}}}`,
		},
		"ToolResultNumberID": {
			reason: "A number id keeps its spelling.",
			cfg:    shared1,
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: toolCall("2.50", "x")}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`,
				Body: toolResult(2.5, "Rate limit reached for calls to this server (1 call per minute, shared by all users). Try again in 60 s.",
					rejectData("shared", "shared", 60, 60000))},
			wantRaw: `{"jsonrpc":"2.0","id":2.50,"result":{"content":[{"type":"text","text":"Rate limit reached for calls to this server (1 call per minute, shared by all users). Try again in 60 s."}],"isError":true,"_meta":{"limit":"shared","retryAfterMs":60000,"retryAfterSeconds":60,"scope":"shared"}}}`,
		},
		"ToolResultNoID": {
			reason: "A tools/call without an id (notification-shaped) keeps the error form without an id, HTTP 429: a result must echo an id, and nobody waits for one.",
			cfg:    shared1,
			resp:   toolResultForm,
			calls: []call{
				{body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}`},
				{body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}`},
			},
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`,
				Body: rejection(nil, "shared", "shared", 60, 60000)},
		},
		"ToolResultLegacyClient": {
			reason: "A client whose Accept lacks text/event-stream (the legacy HTTP+SSE transport reads answers from its stream, not from its POST) keeps the error form and its 429: a 200 would leave it waiting.",
			cfg:    shared1,
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: toolCall("2", "x"), header: map[string]string{"Accept": "*/*"}}},
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`,
				Body: rejection(float64(2), "shared", "shared", 60, 60000)},
		},
		"ToolResultAcceptParameters": {
			reason: "text/event-stream is found among Accept's media ranges whatever their case, spacing and parameters.",
			cfg:    shared1,
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: toolCall("2", "x"), header: map[string]string{"Accept": "application/json;q=1 ,Text/Event-Stream ; q=0.5"}}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`,
				Body: toolResult(float64(2), "Rate limit reached for calls to this server (1 call per minute, shared by all users). Try again in 60 s.",
					rejectData("shared", "shared", 60, 60000))},
		},
		"ToolResultPromptKeepsError": {
			reason: "prompts/get keeps the error form under ToolResult: its result has no isError.",
			cfg:    &v1alpha1.RateLimitConfig{Prompts: []v1alpha1.PromptRateLimitConfig{{Name: "summary", Shared: bucket(1, time.Hour)}}},
			resp:   toolResultForm,
			calls:  []call{{body: promptGet("1", "summary")}, {body: promptGet("2", "summary")}},
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "3600", Policy: `"prompt:summary";q=1;w=3600`, RateLimit: `"prompt:summary";r=0;t=3600`,
				Body: rejection(float64(2), "prompt:summary", "shared", 3600, 3600000)},
		},
		"ToolResultResourceKeepsError": {
			reason: "resources/read keeps the error form under ToolResult, with rejectStatus as configured.",
			cfg:    &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "file:///motd", Shared: bucket(1, time.Hour)}}},
			resp:   v1alpha1.ProxyResponses{ToolRejection: v1alpha1.ToolRejectionToolResult, RejectStatus: 200},
			calls:  []call{{body: resourceRead("1", "file:///motd")}, {body: resourceRead("2", "file:///motd")}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "3600", Policy: `"resource:file:///motd";q=1;w=3600`, RateLimit: `"resource:file:///motd";r=0;t=3600`,
				Body: rejection(float64(2), "resource:file:///motd", "shared", 3600, 3600000)},
		},
		"ToolResultServerPerUser": {
			reason: "A server-level per-user bucket is named as every call of the user's, per user.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(10, time.Hour)},
			resp:   toolResultForm,
			calls:  append(repeat(10, call{user: "bob", body: toolCall("1", "x")}), call{user: "bob", body: toolCall("11", "x")}),
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "360", Policy: `"user";q=10;w=3600`, RateLimit: `"user";r=0;t=360`,
				Body: toolResult(float64(11), "Rate limit reached for calls to this server (10 calls per hour per user). Try again in 6 min.",
					rejectData("user", "perUser", 360, 360000))},
		},
		"ToolResultToolShared": {
			reason: "A tool's shared bucket is said to be shared by all users.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "x", Shared: bucket(2, 90*time.Second)}}},
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: toolCall("2", "x")}, {body: toolCall("3", "x")}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "45", Policy: `"tool:x";q=2;w=90`, RateLimit: `"tool:x";r=0;t=45`,
				Body: toolResult(float64(3), "Rate limit reached for x (2 calls per 90 seconds, shared by all users). Try again in 45 s.",
					rejectData("tool:x", "shared", 45, 45000))},
		},
		"ToolResultCost": {
			reason: "A tool that costs more than one token is counted in tokens, with what the call takes.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "x", Cost: 3, PerUser: bucket(4, time.Minute)}}},
			resp:   toolResultForm,
			calls:  []call{{user: "u", body: toolCall("1", "x")}, {user: "u", body: toolCall("2", "x")}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "30", Policy: `"tool:x:user";q=4;w=60`, RateLimit: `"tool:x:user";r=1;t=15`,
				Body: toolResult(float64(2), "Rate limit reached for x (4 tokens per minute per user; this call takes 3). Try again in 30 s.",
					rejectData("tool:x:user", "perUser", 30, 30000))},
		},
		"ToolResultBatch": {
			reason: "A batch is rejected whole: each tools/call with an id gets its own CallToolResult, prompts/get, resources/read and other requests the error, notifications nothing; HTTP 200 since results are in it.",
			cfg: &v1alpha1.RateLimitConfig{Shared: bucket(6, time.Minute),
				Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "file:///motd", Shared: bucket(5, time.Minute)}}},
			resp: toolResultForm,
			calls: []call{{body: toolCall("1", "x")}, {body: toolCall("1", "x")}, {body: toolCall("1", "x")},
				{body: `[` + toolCall("2", "x") + `,` + promptGet(`"p"`, "summary") + `,` +
					`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}},` + resourceRead("3", "file:///motd") + `,` +
					`{"jsonrpc":"2.0","id":4,"method":"ping"},` + toolCall(`"t"`, "y") + `]`}},
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "20", Policy: `"shared";q=6;w=60, "resource:file:///motd";q=5;w=60`, RateLimit: `"shared";r=3;t=10`,
				Body: []any{
					toolResult(float64(2), batchText, rejectData("shared", "shared", 20, 20000)),
					rejection("p", "shared", "shared", 20, 20000),
					rejection(float64(3), "shared", "shared", 20, 20000),
					rejection(float64(4), "shared", "shared", 20, 20000),
					toolResult("t", batchText, rejectData("shared", "shared", 20, 20000)),
				}},
		},
		"ToolResultBatchWithoutTools": {
			reason: "A rejected batch without a tools/call to answer is all errors, with rejectStatus.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(2, time.Minute)},
			resp:   toolResultForm,
			calls:  []call{{body: promptGet("1", "s")}, {body: `[` + promptGet("2", "s") + `,{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}]`}},
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "30", Policy: `"shared";q=2;w=60`, RateLimit: `"shared";r=1;t=30`,
				Body: []any{rejection(float64(2), "shared", "shared", 30, 30000)}},
		},
		"ToolResultBatchOfNotifications": {
			reason: "A rejected batch of notifications only gets one error without an id, as before.",
			cfg:    shared1,
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: `[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}]`}},
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`,
				Body: rejection(nil, "shared", "shared", 60, 60000)},
		},
		"ToolResultNeverAdmitted": {
			reason: "A batch no wait admits is a tool result too, which says retrying will not help; no Retry-After.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: bucket(1, time.Minute)}}},
			resp:   toolResultForm,
			calls:  []call{{user: "u", body: `[` + toolCall("1", "a") + `,` + toolCall("2", "a") + `]`}},
			want: exchangeResult{Status: 200, ContentType: "application/json", Body: []any{
				toolResult(float64(1), "Rate limit tool:a:user can never admit the batch this call was sent in: cost 2 exceeds maxTokens 1: it can never be admitted. Retrying will not help.",
					map[string]any{"limit": "tool:a:user", "scope": "perUser", "reason": "cost 2 exceeds maxTokens 1: it can never be admitted"}),
				toolResult(float64(2), "Rate limit tool:a:user can never admit the batch this call was sent in: cost 2 exceeds maxTokens 1: it can never be admitted. Retrying will not help.",
					map[string]any{"limit": "tool:a:user", "scope": "perUser", "reason": "cost 2 exceeds maxTokens 1: it can never be admitted"}),
			}},
		},
		"ToolResultShadow": {
			reason: "Shadow mode never rejects, whatever the form.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute), Mode: v1alpha1.RateLimitModeShadow},
			resp:   toolResultForm,
			calls:  []call{{body: toolCall("1", "x")}, {body: toolCall("2", "x")}},
			want:   exchangeResult{Status: 200, Forwarded: true, ContentType: "application/json"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.cfg, tc.resp)
			// Room for the batches (the fixture's bodies are bounded at 1 KiB).
			f.h.Update(Limits{Limiter: f.h.limits.Load().Limiter, Config: tc.cfg, Responses: tc.resp, MaxBodyBytes: 1 << 20})
			var got exchangeResult
			var raw string
			for i, c := range tc.calls {
				got, raw = f.exchange(t, c)
				if i < len(tc.calls)-1 && !got.Forwarded {
					t.Fatalf("call %d was not forwarded: %+v", i+1, got)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
			if tc.wantRaw != "" {
				if diff := cmp.Diff(tc.wantRaw, raw); diff != "" {
					t.Errorf("%s\nbody byte for byte: -want +got:\n%s", tc.reason, diff)
				}
			}
		})
	}
}

func repeat(n int, c call) []call {
	cs := make([]call, n)
	for i := range cs {
		cs[i] = c
	}
	return cs
}

func jsonNumber(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestRejectedText checks the text an agent reads for each kind of bucket.
func TestRejectedText(t *testing.T) {
	state := func(id ratelimit.BucketID, n int32, period time.Duration, cost int64) *ratelimit.BucketState {
		return &ratelimit.BucketState{BucketID: id, MaxTokens: n, RefillPeriod: period, Cost: cost}
	}
	cases := map[string]struct {
		reason string
		rej    *ratelimit.BucketState
		secs   int64
		batch  bool
		want   string
	}{
		"ServerShared": {
			reason: "The server's shared bucket limits every call, for everyone.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopeShared}, 100, time.Minute, 1),
			secs:   1, want: "Rate limit reached for calls to this server (100 calls per minute, shared by all users). Try again in 1 s.",
		},
		"ServerPerUser": {
			reason: "The server's per-user bucket limits every call of one user.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopePerUser}, 1, time.Hour, 1),
			secs:   3600, want: "Rate limit reached for calls to this server (1 call per hour per user). Try again in 60 min.",
		},
		"ToolPerUser": {
			reason: "The brief's example.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: "tool", Name: "web_search"}, 20, time.Minute, 1),
			secs:   12, want: "Rate limit reached for web_search (20 calls per minute per user). Try again in 12 s.",
		},
		"ToolShared": {
			reason: "A tool's shared bucket.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopeShared, Kind: "tool", Name: "web_search"}, 500, 24*time.Hour, 1),
			secs:   7201, want: "Rate limit reached for web_search (500 calls per day, shared by all users). Try again in 3 h.",
		},
		"Prompt": {
			reason: "A prompt's bucket names its kind (it refuses a tools/call only in a batch).",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopeShared, Kind: "prompt", Name: "summary"}, 2, 2*time.Hour, 2),
			secs:   10, batch: true,
			want: "Rate limit reached for prompt summary (2 tokens per 2 hours, shared by all users; the batch takes 2). This call was sent in a batch, which is refused as a whole. Try again in 10 s.",
		},
		"Resource": {
			reason: "A resource's bucket names its URI.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: "resource", Name: "file:///motd"}, 3, 1500*time.Millisecond, 1),
			secs:   1, want: "Rate limit reached for resource file:///motd (3 calls per 1.5s per user). Try again in 1 s.",
		},
		"TierServer": {
			reason: "A tier's per-user bucket says which tier.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Tier: "pro"}, 200, time.Hour, 1),
			secs:   18, want: "Rate limit reached for calls to this server (200 calls per hour per user on tier pro). Try again in 18 s.",
		},
		"TierTool": {
			reason: "A tier's per-user tool bucket, with a cost.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: "tool", Name: "search", Tier: "free"}, 10, 30*time.Second, 5),
			secs:   119, want: "Rate limit reached for search (10 tokens per 30 seconds per user on tier free; this call takes 5). Try again in 119 s.",
		},
		"Minutes": {
			reason: "Two minutes and more are said in minutes, rounded up.",
			rej:    state(ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: "tool", Name: "x"}, 1, 10*time.Minute, 1),
			secs:   121, want: "Rate limit reached for x (1 call per 10 minutes per user). Try again in 3 min.",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, rejectedText(tc.rej, tc.secs, tc.batch)); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
	// A tier bucket's limit name, as data and _meta carry it.
	if diff := cmp.Diff("tool:search:user@free", policyNames(nil).get(ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: "tool", Name: "search", Tier: "free"})); diff != "" {
		t.Errorf("tier bucket name: -want +got:\n%s", diff)
	}
}

// TestRejectionFormsOnStoreFailure: a degraded_rejected call (failurePolicy Local, Redis down)
// is answered in the configured form like any rejection, with the local bucket's wait; a
// fail_closed call is a 503 error in both forms, with the same wait in both units.
func TestRejectionFormsOnStoreFailure(t *testing.T) {
	toolResultForm := v1alpha1.ProxyResponses{ToolRejection: v1alpha1.ToolRejectionToolResult}
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // the local buckets' clock: exact waits
	cases := map[string]struct {
		reason string
		policy v1alpha1.FailurePolicy
		resp   v1alpha1.ProxyResponses
		want   exchangeResult
	}{
		"DegradedToolResult": {
			reason: "The local buckets refuse the second call: a tool result naming the (local) bucket and its exact wait.",
			policy: v1alpha1.FailurePolicyLocal,
			resp:   toolResultForm,
			want: exchangeResult{Status: 200, ContentType: "application/json", RetryAfter: "60", Policy: `"tool:x:user";q=1;w=60`, RateLimit: `"tool:x:user";r=0;t=60`,
				Body: toolResult(float64(2), "Rate limit reached for x (1 call per minute per user). Try again in 60 s.", rejectData("tool:x:user", "perUser", 60, 60000))},
		},
		"DegradedError": {
			reason: "The same in the error form: the usual 429.",
			policy: v1alpha1.FailurePolicyLocal,
			want: exchangeResult{Status: 429, ContentType: "application/json", RetryAfter: "60", Policy: `"tool:x:user";q=1;w=60`, RateLimit: `"tool:x:user";r=0;t=60`,
				Body: rejection(float64(2), "tool:x:user", "perUser", 60, 60000)},
		},
		"FailClosedToolResult": {
			reason: "Fail closed is an outage, not a limit: a 503 error even under ToolResult, retryAfterMs beside retryAfterSeconds.",
			policy: v1alpha1.FailurePolicyDeny,
			resp:   toolResultForm,
			want: exchangeResult{Status: 503, ContentType: "application/json", RetryAfter: "1", Body: map[string]any{"jsonrpc": "2.0", "id": float64(2), "error": map[string]any{
				"code": float64(-32603), "message": "Rate limiter unavailable", "data": map[string]any{"retryAfterSeconds": float64(1), "retryAfterMs": float64(1000)}}}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := &v1alpha1.RateLimitConfig{FailurePolicy: tc.policy, Tools: []v1alpha1.ToolRateLimitConfig{{Name: "x", PerUser: bucket(1, time.Minute)}}}
			f := newFixture(t, cfg, tc.resp)
			lim := *f.h.limits.Load()
			if tc.policy == v1alpha1.FailurePolicyLocal {
				local, err := ratelimit.New(ratelimit.NewLocalStore(ratelimit.LocalOptions{Now: func() time.Time { return frozen }}), "tools", "demo", cfg)
				if err != nil {
					t.Fatal(err)
				}
				lim.Local = local
				f.h.Update(lim)
			}
			f.mr.Close()
			if tc.policy == v1alpha1.FailurePolicyLocal {
				if got, _ := f.exchange(t, call{user: "u", body: toolCall("1", "x")}); !got.Forwarded {
					t.Fatalf("the local buckets did not admit the first call: %+v", got)
				}
			}
			got, _ := f.exchange(t, call{user: "u", body: toolCall("2", "x")})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
