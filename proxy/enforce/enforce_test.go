package enforce

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func bucket(n int32, d time.Duration) *v1alpha1.RateLimitBucket {
	return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: d}}
}

// fixture is a handler in front of a recording upstream, with its limiter on miniredis.
type fixture struct {
	h        *Handler
	upstream atomic.Int64 // requests that reached the upstream
	metrics  *Metrics
	log      *bytes.Buffer
	mr       *miniredis.Miniredis

	mu         sync.Mutex
	lastURI    string      // the request URI the upstream last received
	lastHeader http.Header // and its headers
	lastMethod string
	lastBody   []byte
}

func newFixture(t testing.TB, cfg *v1alpha1.RateLimitConfig, resp v1alpha1.ProxyResponses, tweak ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{log: &bytes.Buffer{}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.upstream.Add(1)
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.lastURI, f.lastHeader, f.lastMethod, f.lastBody = r.RequestURI, r.Header.Clone(), r.Method, body
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Mcp-Session-Id", "s-1")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{"echo":` + strconvQuote(string(body)) + `}}`))
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL + "/mcp")
	f.mr = miniredis.RunT(t)
	f.mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := redis.NewClient(&redis.Options{Addr: f.mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	lim, err := ratelimit.New(c, "tools", "demo", cfg)
	if err != nil {
		t.Fatalf("ratelimit.New: %v", err)
	}
	authn, err := auth.New(t.Context(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "X-User"}})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	f.metrics = NewMetrics(prometheus.NewRegistry())
	opts := Options{Upstream: u, Auth: authn, Metrics: f.metrics, DecisionLog: NewDecisionLog(f.log)}
	for _, tw := range tweak {
		tw(&opts)
	}
	f.h = New(opts, Limits{Limiter: lim, Config: cfg, Responses: resp, MaxBodyBytes: 1024})
	return f
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// call is one HTTP request to the handler.
type call struct {
	method string // default POST
	path   string // default /mcp
	user   string
	header map[string]string
	body   string
}

// result is what a test checks of a response.
type result struct {
	Status     int
	Forwarded  bool
	RetryAfter string
	RateLimit  string
	Policy     string
	Body       map[string]any // the JSON-RPC error object (or nil)
}

func (f *fixture) do(t *testing.T, c call) result {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/mcp"
	}
	r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	r.RemoteAddr = "127.0.0.1:5555"
	if c.body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	if c.user != "" {
		r.Header.Set("X-User", c.user)
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	before := f.upstream.Load()
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	res := result{
		Status: w.Code, Forwarded: f.upstream.Load() > before,
		RetryAfter: w.Header().Get("Retry-After"), RateLimit: w.Header().Get("RateLimit"), Policy: w.Header().Get("RateLimit-Policy"),
	}
	if !res.Forwarded && w.Body.Len() > 0 {
		var v any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("response body is not JSON: %q", w.Body.String())
		}
		if m, ok := v.(map[string]any); ok {
			res.Body = m
		} else {
			res.Body = map[string]any{"batch": v}
		}
	}
	return res
}

func toolCall(id, name string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"` + name + `","arguments":{}}}`
}

func rejection(id any, limit, scope string, secs, ms float64) map[string]any {
	m := map[string]any{"jsonrpc": "2.0", "error": map[string]any{
		"code": float64(429), "message": "Rate limit exceeded",
		"data": map[string]any{"retryAfterSeconds": secs, "retryAfterMs": ms, "limit": limit, "scope": scope},
	}}
	if id != nil {
		m["id"] = id
	}
	return m
}

func TestHandler(t *testing.T) {
	shared3 := &v1alpha1.RateLimitConfig{Shared: bucket(3, time.Minute)}
	noDrain := &v1alpha1.RateLimitConfig{Shared: bucket(3, time.Minute), PerUser: bucket(1, time.Minute)}
	forwarded := result{Status: 200, Forwarded: true}
	cases := map[string]struct {
		reason string
		cfg    *v1alpha1.RateLimitConfig
		resp   v1alpha1.ProxyResponses
		calls  []call
		want   []result
	}{
		"SharedCapacity3": {
			reason: "The 4th call is a 429 with Retry-After, RateLimit headers and a JSON-RPC error echoing the id.",
			cfg:    shared3,
			calls:  []call{{body: toolCall("1", "a")}, {body: toolCall("2", "a")}, {body: toolCall("3", "a")}, {body: toolCall(`"four"`, "a")}},
			want: []result{
				{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60`},
				{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60`},
				{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60`},
				{Status: 429, RetryAfter: "20", Policy: `"shared";q=3;w=60`, RateLimit: `"shared";r=0;t=20`, Body: rejection("four", "shared", "shared", 20, 20000)},
			},
		},
		"NoDrain": {
			reason: "A per-user rejection leaves the shared bucket: b and c get in, d is stopped by the shared bucket.",
			cfg:    noDrain,
			calls: []call{
				{user: "a", body: toolCall("1", "x")}, {user: "a", body: toolCall("2", "x")},
				{user: "b", body: toolCall("3", "x")}, {user: "c", body: toolCall("4", "x")}, {user: "d", body: toolCall("5", "x")},
			},
			want: []result{
				{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60, "user";q=1;w=60`, RateLimit: `"user";r=0;t=60`},
				{Status: 429, RetryAfter: "60", Policy: `"shared";q=3;w=60, "user";q=1;w=60`, RateLimit: `"user";r=0;t=60`, Body: rejection(float64(2), "user", "perUser", 60, 60000)},
				{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60, "user";q=1;w=60`, RateLimit: `"user";r=0;t=60`},
				{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60, "user";q=1;w=60`, RateLimit: `"user";r=0;t=60`},
				{Status: 429, RetryAfter: "20", Policy: `"shared";q=3;w=60, "user";q=1;w=60`, RateLimit: `"shared";r=0;t=20, "user";r=1;t=0`, Body: rejection(float64(5), "shared", "shared", 20, 20000)},
			},
		},
		"AnonymousWithPerUser": {
			reason: "A call a per-user bucket applies to, without an identity, is a 401, never an anonymous pass.",
			cfg:    noDrain,
			calls:  []call{{body: toolCall("1", "x")}},
			want:   []result{{Status: 401, Body: map[string]any{"jsonrpc": "2.0", "id": float64(1), "error": map[string]any{"code": float64(401), "message": "Unauthorized", "data": "a per-user rate limit applies to this call: the caller must be identified"}}}},
		},
		"NotificationFormLimited": {
			reason: "tools/call without an id is limited too; its rejection carries no id.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute)},
			calls:  []call{{body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}`}, {body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}`}},
			want:   []result{{Status: 200, Forwarded: true, Policy: `"shared";q=1;w=60`}, {Status: 429, RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`, Body: rejection(nil, "shared", "shared", 60, 60000)}},
		},
		"NeverLimited": {
			reason: "initialize, tools/list, ping, notifications, client responses, GET and DELETE pass with the bucket empty.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute)},
			calls: []call{
				{body: toolCall("1", "a")},
				{body: `{"jsonrpc":"2.0","id":2,"method":"initialize","params":{}}`},
				{body: `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`},
				{body: `{"jsonrpc":"2.0","id":4,"method":"ping"}`},
				{body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`},
				{body: `{"jsonrpc":"2.0","id":7,"result":{}}`},
				{method: http.MethodGet},
				{method: http.MethodDelete},
			},
			want: []result{{Status: 200, Forwarded: true, Policy: `"shared";q=1;w=60`}, forwarded, forwarded, forwarded, forwarded, forwarded, forwarded, forwarded},
		},
		"BatchRejectedWhole": {
			reason: "A batch is one decision: too many calls reject all of them, one error per request with an id.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(2, time.Minute)},
			calls: []call{
				{body: `[` + toolCall("1", "a") + `,` + toolCall("2", "b") + `,{"jsonrpc":"2.0","method":"notifications/x"}]`},
				{body: `[` + toolCall("3", "a") + `]`},
			},
			want: []result{
				{Status: 200, Forwarded: true, Policy: `"shared";q=2;w=60`},
				{Status: 429, RetryAfter: "30", Policy: `"shared";q=2;w=60`, RateLimit: `"shared";r=0;t=30`, Body: map[string]any{"batch": []any{rejection(float64(3), "shared", "shared", 30, 30000)}}},
			},
		},
		"BatchAboveCapacity": {
			reason: "A batch whose cost exceeds a bucket can never be admitted: refused, not failed open, the bucket named as every rejection names it.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: bucket(1, time.Minute)}}},
			calls:  []call{{user: "u", body: `[` + toolCall("1", "a") + `,` + toolCall("2", "a") + `]`}},
			want: []result{{Status: 429, Body: map[string]any{"batch": []any{
				map[string]any{"jsonrpc": "2.0", "id": float64(1), "error": map[string]any{"code": float64(429), "message": "Rate limit exceeded", "data": map[string]any{"limit": "tool:a:user", "scope": "perUser", "reason": "cost 2 exceeds maxTokens 1: it can never be admitted"}}},
				map[string]any{"jsonrpc": "2.0", "id": float64(2), "error": map[string]any{"code": float64(429), "message": "Rate limit exceeded", "data": map[string]any{"limit": "tool:a:user", "scope": "perUser", "reason": "cost 2 exceeds maxTokens 1: it can never be admitted"}}},
			}}}},
		},
		"Reject200": {
			reason: "rejectStatus 200 answers with HTTP 200 and the same JSON-RPC error, for clients that drop a 429's body.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute)},
			resp:   v1alpha1.ProxyResponses{RejectStatus: 200},
			calls:  []call{{body: toolCall("1", "a")}, {body: toolCall("2", "a")}},
			want:   []result{{Status: 200, Forwarded: true, Policy: `"shared";q=1;w=60`}, {Status: 200, RetryAfter: "60", Policy: `"shared";q=1;w=60`, RateLimit: `"shared";r=0;t=60`, Body: rejection(float64(2), "shared", "shared", 60, 60000)}},
		},
		"ExposeShared": {
			reason: "With exposeSharedRemaining, allowed responses show the shared bucket's level.",
			cfg:    shared3,
			resp:   v1alpha1.ProxyResponses{ExposeSharedRemaining: true},
			calls:  []call{{body: toolCall("1", "a")}},
			want:   []result{{Status: 200, Forwarded: true, Policy: `"shared";q=3;w=60`, RateLimit: `"shared";r=2;t=20`}},
		},
		"Shadow": {
			reason: "Shadow mode decides and counts but never rejects.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute), Mode: v1alpha1.RateLimitModeShadow},
			calls:  []call{{body: toolCall("1", "a")}, {body: toolCall("2", "a")}},
			want:   []result{{Status: 200, Forwarded: true, Policy: `"shared";q=1;w=60`}, forwarded},
		},
		"BadInput": {
			reason: "Oversized, malformed and ambiguous bodies get the right status and JSON-RPC error and never reach the upstream.",
			cfg:    shared3,
			calls: []call{
				{body: toolCall("1", strings.Repeat("x", 2000))},
				{body: `{"jsonrpc":"2.0",`},
				{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping","params":{"name":"a"}}`},
				{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}`, header: map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "b"}},
				{body: toolCall("1", "a"), header: map[string]string{"Content-Encoding": "gzip"}},
			},
			want: []result{
				{Status: 413, Body: map[string]any{"jsonrpc": "2.0", "error": map[string]any{"code": float64(-32600), "message": "Request body too large", "data": map[string]any{"maxBodyBytes": float64(1024)}}}},
				{Status: 400, Body: map[string]any{"jsonrpc": "2.0", "error": map[string]any{"code": float64(-32700), "message": "Parse error"}}},
				{Status: 400, Body: map[string]any{"jsonrpc": "2.0", "error": map[string]any{"code": float64(-32600), "message": "Invalid Request"}}},
				{Status: 400, Body: map[string]any{"jsonrpc": "2.0", "id": float64(1), "error": map[string]any{"code": float64(-32020)}}},
				{Status: 415, Body: map[string]any{"jsonrpc": "2.0", "error": map[string]any{"code": float64(-32600), "message": "Content-Encoding not supported"}}},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.cfg, tc.resp)
			var got []result
			for _, c := range tc.calls {
				got = append(got, f.do(t, c))
			}
			// Error details vary in wording; compare the members a client relies on.
			if diff := cmp.Diff(tc.want, trimDetails(tc.want, got)); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// trimDetails drops the members of got's error objects that want does not name (a parse
// error's data says where the body went wrong, in words a test should not pin).
func trimDetails(want, got []result) []result {
	out := make([]result, len(got))
	copy(out, got)
	for i := range out {
		if i >= len(want) || want[i].Body == nil || out[i].Body == nil {
			continue
		}
		out[i].Body = trimMap(want[i].Body, out[i].Body)
	}
	return out
}

func trimMap(want, got map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range got {
		w, ok := want[k]
		if !ok {
			continue
		}
		if wm, ok := w.(map[string]any); ok {
			if gm, ok := v.(map[string]any); ok {
				v = trimMap(wm, gm)
			}
		}
		out[k] = v
	}
	return out
}

// TestHandlerMetricsAndLog checks the counters and the decision log of a short sequence.
func TestHandlerMetricsAndLog(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Minute)}
	f := newFixture(t, cfg, v1alpha1.ProxyResponses{})
	var logged bytes.Buffer
	f.h.opts.Log = slog.New(slog.NewJSONHandler(&logged, nil))
	f.do(t, call{user: "alice", body: toolCall("1", "a")})
	f.do(t, call{user: "alice", body: toolCall("2", "a")})
	f.do(t, call{user: "alice", body: `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`})
	if got := testutil.ToFloat64(f.metrics.decisions.WithLabelValues("tools/call", string(ratelimit.OutcomeAllowed), "")); got != 1 {
		t.Errorf("allowed decisions: want 1, got %v", got)
	}
	if got := testutil.ToFloat64(f.metrics.decisions.WithLabelValues("tools/call", string(ratelimit.OutcomeRejected), "")); got != 1 {
		t.Errorf("rejected decisions: want 1, got %v", got)
	}
	if got := testutil.ToFloat64(f.metrics.rejections.WithLabelValues("shared", "shared")); got != 1 {
		t.Errorf("rejections by shared: want 1, got %v", got)
	}
	var recs []ratelimit.Record
	for _, line := range strings.Split(strings.TrimSpace(f.log.String()), "\n") {
		var r ratelimit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decision log line %q: %v", line, err)
		}
		r.Time = time.Time{}
		recs = append(recs, r)
	}
	u := ratelimit.HashUser(nil, "alice")
	want := []ratelimit.Record{
		{Method: "tools/call", Name: "a", User: u, Cost: 1, Decision: ratelimit.OutcomeAllowed},
		{Method: "tools/call", Name: "a", User: u, Cost: 1, Decision: ratelimit.OutcomeRejected, Limit: "shared", RetryAfterMs: 60000},
		{Method: "tools/list", User: u, Cost: 1, Decision: ratelimit.OutcomeUnlimited},
	}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("decision log: -want +got:\n%s", diff)
	}

	// One log line per rejection, naming the user by hash only.
	var line struct {
		Msg, Limit, User string
		Calls            int
	}
	if err := json.Unmarshal(logged.Bytes(), &line); err != nil {
		t.Fatalf("log %q: want one JSON line: %v", logged.String(), err)
	}
	wantLine := struct {
		Msg, Limit, User string
		Calls            int
	}{Msg: "rate limited", Limit: "shared", User: u, Calls: 1}
	if diff := cmp.Diff(wantLine, line); diff != "" {
		t.Errorf("rejection log line: -want +got:\n%s", diff)
	}
	if strings.Contains(logged.String(), "alice") {
		t.Errorf("the log holds the user id in clear: %s", logged.String())
	}
}

// TestStoreFailure: Redis down → fail open by default (counted), 503 with failurePolicy Deny.
func TestStoreFailure(t *testing.T) {
	for name, tc := range map[string]struct {
		policy v1alpha1.FailurePolicy
		want   result
	}{
		"FailOpen": {v1alpha1.FailurePolicyAllow, result{Status: 200, Forwarded: true}},
		"FailClosed": {v1alpha1.FailurePolicyDeny, result{Status: 503, RetryAfter: "1", Body: map[string]any{"jsonrpc": "2.0", "id": float64(1), "error": map[string]any{"code": float64(-32603), "message": "Rate limiter unavailable",
			"data": map[string]any{"retryAfterSeconds": float64(1), "retryAfterMs": float64(1000)}}}}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := &v1alpha1.RateLimitConfig{Shared: bucket(5, time.Minute), FailurePolicy: tc.policy}
			f := newFixture(t, cfg, v1alpha1.ProxyResponses{})
			f.mr.Close()
			got := f.do(t, call{body: toolCall("1", "a")})
			if diff := cmp.Diff(tc.want, trimDetails([]result{tc.want}, []result{got})[0]); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
			if n := testutil.ToFloat64(f.metrics.storeErrors.WithLabelValues("error")) + testutil.ToFloat64(f.metrics.storeErrors.WithLabelValues("timeout")); n != 1 {
				t.Errorf("store errors counted: want 1, got %v", n)
			}
		})
	}
}

// TestRefusalLogPaced: a caller hammering a spent bucket gets every refusal (and every
// decision-log line and metric), but the log lines of refusals are paced: a burst of
// RefusalLogBurst, then RefusalLogRate a second, and the first line after held-back ones says
// how many ("suppressed").
func TestRefusalLogPaced(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Hour)}
	f := newFixture(t, cfg, v1alpha1.ProxyResponses{}, func(o *Options) { o.Now = func() time.Time { return now } })
	var logged bytes.Buffer
	f.h.opts.Log = slog.New(slog.NewJSONHandler(&logged, nil))
	f.do(t, call{user: "mallory", body: toolCall("0", "a")}) // takes the one token
	const flood = RefusalLogBurst + 50
	for i := range flood {
		if got := f.do(t, call{user: "mallory", body: toolCall(strconv.Itoa(i+1), "a")}); got.Status != http.StatusTooManyRequests {
			t.Fatalf("call %d: status %d, want 429", i+1, got.Status)
		}
	}
	now = now.Add(time.Second) // RefusalLogRate more lines may be written
	f.do(t, call{user: "mallory", body: toolCall(strconv.Itoa(flood+1), "a")})

	type line struct {
		Msg        string
		Suppressed int
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		var v line
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		got = append(got, v)
	}
	want := make([]line, RefusalLogBurst)
	for i := range want {
		want[i] = line{Msg: "rate limited"}
	}
	want = append(want, line{Msg: "rate limited", Suppressed: 50})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines: -want +got:\n%s", diff)
	}
	if got := testutil.ToFloat64(f.metrics.decisions.WithLabelValues("tools/call", string(ratelimit.OutcomeRejected), "")); got != flood+1 {
		t.Errorf("rejected decisions counted: %v, want every one (%d)", got, flood+1)
	}
}
