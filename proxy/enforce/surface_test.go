package enforce

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testoidc"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/mcp"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/proxy/route"
)

// surface is what TestSurface checks of one request.
type surface struct {
	Status    int
	Forwarded string // the request URI the upstream received; "" when nothing was forwarded
	Allow     string
	Close     bool // the proxy closes the connection
}

func withRoutes(messages []string, rules ...v1alpha1.PassthroughPath) func(*Options) {
	return func(o *Options) {
		t, err := route.New("/mcp", messages, rules)
		if err != nil {
			panic(err)
		}
		o.Routes = t
	}
}

// TestSurface: what reaches the upstream, and under which path, for every route, method,
// body and header rule of the closed-by-default surface.
func TestSurface(t *testing.T) {
	perUser := &v1alpha1.RateLimitConfig{PerUser: bucket(100, time.Minute)}
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	cases := map[string]struct {
		reason string
		c      call
		want   surface
	}{
		"Endpoint": {"The endpoint is forwarded under its own path.",
			call{user: "a", body: list}, surface{Status: 200, Forwarded: "/mcp"}},
		"EndpointSpelling": {"Another spelling is the endpoint, forwarded under the endpoint's path; its query stays.",
			call{user: "a", path: "/MCP/?x=1", body: list}, surface{Status: 200, Forwarded: "/mcp?x=1"}},
		"EndpointLimitedSpelling": {"A spelling is identified like the endpoint: a per-user limit wants an identity.",
			call{path: "//Mcp;a", body: toolCall("1", "t")}, surface{Status: 401}},
		"NotFound": {"Any other path is 404.",
			call{user: "a", path: "/admin", body: list}, surface{Status: 404}},
		"Metadata": {"The metadata path is not served (no OIDC) and not forwarded.",
			call{method: http.MethodGet, path: "/.well-known/oauth-protected-resource/mcp"}, surface{Status: 404}},
		"BadPath": {"A path that cannot be cleaned is 400.",
			call{user: "a", path: "/mcp%00", body: list}, surface{Status: 400, Close: true}},
		"Put": {"PUT is not a method of the endpoint.",
			call{method: http.MethodPut, user: "a", body: list}, surface{Status: 405, Allow: allowEndpoint, Close: true}},
		"Head": {"Neither is HEAD.",
			call{method: http.MethodHead, user: "a"}, surface{Status: 405, Allow: allowEndpoint}},
		"GetStream": {"GET (a stream) is forwarded.",
			call{method: http.MethodGet, user: "a"}, surface{Status: 200, Forwarded: "/mcp"}},
		"GetWithBody": {"A GET with a body is refused: forwarded, the body could be a second request.",
			call{method: http.MethodGet, user: "a", body: list}, surface{Status: 400, Close: true}},
		"DeleteWithBody": {"Likewise DELETE.",
			call{method: http.MethodDelete, user: "a", body: list}, surface{Status: 400, Close: true}},
		"Options": {"OPTIONS (CORS preflight) is forwarded.",
			call{method: http.MethodOptions}, surface{Status: 200, Forwarded: "/mcp"}},
		"PassExact": {"An allow-listed path is forwarded, cleaned.",
			call{method: http.MethodGet, path: "/health//", user: "a"}, surface{Status: 200, Forwarded: "/health"}},
		"PassPost": {"A pass-through POST keeps its body, unparsed.",
			call{path: "/oauth/token", body: "grant_type=x"}, surface{Status: 200, Forwarded: "/oauth/token"}},
		"PassHeadBody": {"A pass-through HEAD with a body is refused (request smuggling).",
			call{method: http.MethodHead, path: "/health", body: "GET /x HTTP/1.1\r\n\r\n"}, surface{Status: 400, Close: true}},
		"PassTrace": {"TRACE is never forwarded.",
			call{method: http.MethodTrace, path: "/health"}, surface{Status: 405, Allow: allowPassthrough}},
		"Messages": {"A message endpoint takes POSTs, parsed and limited.",
			call{path: "/messages?sessionId=1", body: toolCall("1", "t")}, surface{Status: 401}},
		"MessagesForwarded": {"Forwarded under the announced path with its query.",
			call{user: "a", path: "/Messages/?sessionId=1", body: toolCall("1", "t")}, surface{Status: 200, Forwarded: "/messages?sessionId=1"}},
		"MessagesDelete": {"A message endpoint takes no DELETE.",
			call{method: http.MethodDelete, user: "a", path: "/messages"}, surface{Status: 405, Allow: allowMessages}},
		"WebSocket": {"A WebSocket upgrade is refused on the endpoint.",
			call{method: http.MethodGet, user: "a", header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}}, surface{Status: 400, Close: true}},
		"WebSocketPass": {"A pass-through rule may allow upgrades.",
			call{method: http.MethodGet, path: "/ws", header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}}, surface{Status: 200, Forwarded: "/ws"}},
		"H2C": {"An h2c upgrade is dropped, the request served as HTTP/1.1.",
			call{user: "a", body: list, header: map[string]string{"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__"}}, surface{Status: 200, Forwarded: "/mcp"}},
		"ConnectionIdentity": {"A Connection header naming the identity header would strip it before the upstream: 400.",
			call{user: "carol", body: toolCall("1", "t"), header: map[string]string{"Connection": "keep-alive, x-user"}}, surface{Status: 400}},
		"ConnectionAuthorization": {"Authorization likewise.",
			call{user: "carol", body: list, header: map[string]string{"Connection": "Authorization"}}, surface{Status: 400}},
		"LookAlike": {"X_User beside X-User: servers that fold '_' into '-' would read another identity.",
			call{user: "carol", body: toolCall("1", "t"), header: map[string]string{"X_user": "mallory"}}, surface{Status: 400}},
		"ContentEncoding": {"A compressed body cannot be classified: 415.",
			call{user: "a", body: list, header: map[string]string{"Content-Encoding": "gzip"}}, surface{Status: 415, Close: true}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, perUser, v1alpha1.ProxyResponses{}, withRoutes([]string{"/messages"},
				v1alpha1.PassthroughPath{Path: "/health"},
				v1alpha1.PassthroughPath{Path: "/oauth", PathType: v1alpha1.PathTypePrefix},
				v1alpha1.PassthroughPath{Path: "/ws", AllowUpgrade: true},
			))
			w, forwarded := f.serve(t, tc.c)
			got := surface{Status: w.Code, Forwarded: forwarded, Allow: w.Header().Get("Allow"), Close: w.Header().Get("Connection") == "close"}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// serve runs one call and returns the response and the request URI the upstream received ("" when
// nothing was forwarded).
func (f *fixture) serve(t *testing.T, c call) (*httptest.ResponseRecorder, string) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/mcp"
	}
	r := httptest.NewRequest(c.method, "http://proxy"+c.path, strings.NewReader(c.body))
	r.RemoteAddr = "127.0.0.1:5555"
	if c.body == "" {
		r.Body, r.ContentLength = http.NoBody, 0
	}
	if c.user != "" {
		r.Header.Set("X-User", c.user)
	}
	for k, v := range c.header {
		r.Header[k] = []string{v} // as sent: not canonicalised (X_user stays X_user)
	}
	before := f.upstream.Load()
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if f.upstream.Load() == before {
		return w, ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return w, f.lastURI
}

// TestSurfaceIdentityForwarded: the identity header the proxy charged reaches the upstream.
func TestSurfaceIdentityForwarded(t *testing.T) {
	f := newFixture(t, &v1alpha1.RateLimitConfig{PerUser: bucket(5, time.Minute)}, v1alpha1.ProxyResponses{})
	if w, fwd := f.serve(t, call{user: "carol", body: toolCall("1", "t")}); w.Code != 200 || fwd == "" {
		t.Fatalf("a call from carol: %d, forwarded %q", w.Code, fwd)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.lastHeader.Values("X-User"); !cmp.Equal(got, []string{"carol"}) {
		t.Errorf("the upstream received X-User %q, want [carol]", got)
	}
}

// TestSurfaceOIDC: with OIDC, pass-through paths are authenticated too; a CORS preflight,
// which never carries credentials, is not.
func TestSurfaceOIDC(t *testing.T) {
	issuer := testoidc.Start(t)
	authn, err := auth.New(t.Context(), v1alpha1.ProxyAuth{OIDC: &v1alpha1.OIDCConfig{Issuer: issuer.URL(), Audience: testoidc.Audience}},
		auth.WithHTTPClient(issuer.Client()))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, v1alpha1.ProxyResponses{}, withRoutes(nil, v1alpha1.PassthroughPath{Path: "/health"}),
		func(o *Options) { o.Auth = authn })
	token := "Bearer " + issuer.Token(t, map[string]any{"sub": "alice"})
	for name, tc := range map[string]struct {
		c    call
		want int
	}{
		"PassNoToken":    {call{method: http.MethodGet, path: "/health"}, 401},
		"PassToken":      {call{method: http.MethodGet, path: "/health", header: map[string]string{"Authorization": token}}, 200},
		"Preflight":      {call{method: http.MethodOptions}, 200},
		"EndpointNoAuth": {call{method: http.MethodGet}, 401},
		"ConnectionAuth": {call{method: http.MethodGet, header: map[string]string{"Authorization": token, "Connection": "authorization"}}, 400},
	} {
		t.Run(name, func(t *testing.T) {
			if w, _ := f.serve(t, tc.c); w.Code != tc.want {
				t.Errorf("%d, want %d: %s", w.Code, tc.want, w.Body.String())
			}
		})
	}
}

// TestSurfaceStreams: GET requests are capped per caller and in all; a slot is given back
// when the stream ends.
func TestSurfaceStreams(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	u, _ := url.Parse(up.URL + "/mcp")
	authn, _ := auth.New(t.Context(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "X-User"}})
	m := NewMetrics(prometheus.NewRegistry())
	h := New(Options{Upstream: u, Auth: authn, MaxStreams: 3, MaxStreamsPerCaller: 2, Metrics: m}, Limits{})
	open := func(user string) (int, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/mcp", http.NoBody)
		r.Header.Set("X-User", user)
		w := newStreamRecorder()
		go h.ServeHTTP(w, r)
		return w.status(), cancel
	}
	var cancels []context.CancelFunc
	for i, tc := range []struct {
		user string
		want int
	}{{"a", 200}, {"a", 200}, {"a", 429}, {"b", 200}, {"c", 503}} {
		got, cancel := open(tc.user)
		cancels = append(cancels, cancel)
		if got != tc.want {
			t.Errorf("stream %d of %s: %d, want %d", i+1, tc.user, got, tc.want)
		}
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("streams_caller")); got != 1 {
		t.Errorf("streams refused per caller: %v, want 1", got)
	}
	cancels[0]() // a's first stream ends: c gets its slot
	deadline := time.Now().Add(5 * time.Second)
	for h.streams.inUse() != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, cancel := open("c"); got != 200 {
		t.Errorf("after a stream ended: %d, want 200", got)
		cancel()
	} else {
		cancels = append(cancels, cancel)
	}
	for _, c := range cancels {
		c()
	}
}

// streamRecorder is a ResponseWriter whose status can be awaited while the handler runs on.
type streamRecorder struct {
	header http.Header
	code   chan int
}

func newStreamRecorder() *streamRecorder {
	return &streamRecorder{header: http.Header{}, code: make(chan int, 1)}
}

func (s *streamRecorder) Header() http.Header { return s.header }
func (s *streamRecorder) WriteHeader(c int) {
	select {
	case s.code <- c:
	default:
	}
}
func (s *streamRecorder) Write(b []byte) (int, error) { s.WriteHeader(200); return len(b), nil }
func (s *streamRecorder) Flush()                      {}
func (s *streamRecorder) status() int {
	select {
	case c := <-s.code:
		return c
	case <-time.After(5 * time.Second):
		return 0
	}
}

// TestReadBody: a body is read within its bounds, and its memory comes from the quotas.
func TestReadBody(t *testing.T) {
	cases := map[string]struct {
		reason           string
		body             string
		max              int64
		total, perCaller int64
		held             int64 // already held by the same caller
		want             *bodyError
	}{
		"Small":    {reason: "A small body is read.", body: `{"a":1}`, max: 1024, total: 1 << 20, perCaller: 1 << 16},
		"Large":    {reason: "A body larger than the first chunk grows.", body: strings.Repeat("x", 20000), max: 1 << 20, total: 1 << 20, perCaller: 1 << 20},
		"TooLarge": {reason: "Past maxBodyBytes: 413.", body: strings.Repeat("x", 2000), max: 1000, total: 1 << 20, perCaller: 1 << 20, want: errBodyTooLarge},
		"Caller":   {reason: "Past the caller's share: 429.", body: strings.Repeat("x", 20000), max: 1 << 20, total: 1 << 20, perCaller: 1 << 20, held: 1<<20 - 8000, want: errBodyCaller},
		"Total":    {reason: "Past the proxy's total: 503.", body: strings.Repeat("x", 20000), max: 1 << 20, total: 16000, perCaller: 1 << 20, want: errBodyTotal},
		"FirstChunkBeyondTotal": {reason: "A small body is read even when others filled the total: its first chunk counts against its caller only.",
			body: `{"small":true}`, max: 1 << 20, total: 1, perCaller: 1 << 20},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := &Handler{opts: Options{BodyReadTimeout: time.Second, Now: time.Now}, bytes: newQuota(tc.total, tc.perCaller)}
			h.bytes.acquire("c", tc.held)
			r := httptest.NewRequest(http.MethodPost, "/mcp", io.NopCloser(strings.NewReader(tc.body)))
			r.ContentLength = -1 // unknown: read as it comes
			got, took, err := h.readBody(httptest.NewRecorder(), r, "c", tc.max)
			if err != tc.want {
				t.Fatalf("%s\nerror %v, want %v", tc.reason, err, tc.want)
			}
			if err == nil && string(got) != tc.body {
				t.Errorf("%s\nread %d bytes, want the %d sent", tc.reason, len(got), len(tc.body))
			}
			if h.bytes.inUse() != tc.held+took.n {
				t.Errorf("%s\nquota holds %d, want %d", tc.reason, h.bytes.inUse(), tc.held+took.n)
			}
			if err == nil && took.n < int64(len(tc.body)) {
				t.Errorf("%s\ntook %d bytes of quota for a %d-byte body", tc.reason, took.n, len(tc.body))
			}
			if took.n-took.total > firstChunk {
				t.Errorf("%s\n%d bytes taken outside the total: at most the first chunk may be", tc.reason, took.n-took.total)
			}
			h.bytes.release("c", took.n, took.total)
			h.bytes.release("c", tc.held, tc.held)
			if h.bytes.inUse() != 0 {
				t.Errorf("%s\nquota holds %d after release", tc.reason, h.bytes.inUse())
			}
		})
	}
}

// TestQuota: a caller's share is checked before the total, and release gives back exactly.
func TestQuota(t *testing.T) {
	q := newQuota(10, 4)
	steps := []struct {
		caller string
		n      int64
		want   quotaResult
	}{
		{"a", 4, quotaOK}, {"a", 1, quotaCaller}, {"b", 4, quotaOK}, {"c", 3, quotaTotal}, {"c", 2, quotaOK},
	}
	for i, s := range steps {
		if got := q.acquire(s.caller, s.n); got != s.want {
			t.Errorf("step %d: acquire(%s, %d) = %v, want %v", i, s.caller, s.n, got, s.want)
		}
	}
	if got := q.acquireOwn("d", 3); got != quotaOK {
		t.Errorf("acquireOwn past the total: %v, want ok (only the caller's share counts)", got)
	}
	if got := q.acquireOwn("d", 2); got != quotaCaller {
		t.Errorf("acquireOwn past the caller's share: %v, want quotaCaller", got)
	}
	q.release("a", 4, 4)
	q.release("b", 4, 4)
	q.release("c", 2, 2)
	q.release("d", 3, 0)
	if q.inUse() != 0 || len(q.held) != 0 {
		t.Errorf("after releasing everything: %d in use, %d callers held", q.inUse(), len(q.held))
	}
}

// TestCanonicalResourcesRefused: a resources/read whose uri has no canonical form is invalid
// params, with the request's id; it never reaches the upstream.
func TestCanonicalResourcesRefused(t *testing.T) {
	f := newFixture(t, &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "file:///x", Shared: bucket(1, time.Minute)}}}, v1alpha1.ProxyResponses{})
	res := f.do(t, call{user: "a", body: `{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"no scheme here"}}`})
	errObj, _ := res.Body["error"].(map[string]any)
	if res.Status != http.StatusBadRequest || res.Forwarded || res.Body["id"] != float64(9) || errObj["code"] != float64(-32602) {
		t.Errorf("an uncanonicalisable uri: %+v, want 400 with -32602 and id 9", res)
	}
}

// TestSSEWatch: the endpoint event of a relayed stream is learned and rewritten.
func TestSSEWatch(t *testing.T) {
	base, _ := url.Parse("http://up:9000/sse")
	cases := map[string]struct {
		reason  string
		stream  string
		want    string // what the client reads
		learned string // the path learned ("" none)
		err     bool
	}{
		"Relative": {reason: "A relative endpoint is resolved and relayed as an absolute path.",
			stream: "event: endpoint\ndata: messages?sessionId=1\n\ndata: x\n\n", want: "event: endpoint\ndata: /messages?sessionId=1\n\ndata: x\n\n", learned: "/messages"},
		"Absolute": {reason: "An absolute path is relayed as it is.",
			stream: "event: endpoint\r\ndata: /messages?sessionId=1\r\n\r\n", want: "event: endpoint\r\ndata: /messages?sessionId=1\r\n\r\n", learned: "/messages"},
		"SameOrigin": {reason: "A full URL on the upstream's origin becomes a path on the proxy's.",
			stream: "event: endpoint\ndata: http://up:9000/m?s=2\n\n", want: "event: endpoint\ndata: /m?s=2\n\n", learned: "/m"},
		"Foreign": {reason: "Another origin would send clients around the proxy: the stream is cut.",
			stream: "event: endpoint\ndata: http://evil:1/m?s=2\n\n", err: true},
		"CommentFirst": {reason: "Comments before the event are relayed; the event is still read.",
			stream: ": hi\n\nevent: endpoint\ndata: /m2?s=3\n\n", want: ": hi\n\nevent: endpoint\ndata: /m2?s=3\n\n", learned: "/m2"},
		"OtherEvent": {reason: "A stream whose first event is not endpoint (Streamable HTTP) is relayed untouched.",
			stream: "event: message\ndata: {}\n\nevent: endpoint\ndata: /late\n\n", want: "event: message\ndata: {}\n\nevent: endpoint\ndata: /late\n\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			routes, _ := route.New("/mcp", nil, nil)
			s := newSessions()
			w := newSSEWatch(io.NopCloser(&slowReader{r: strings.NewReader(tc.stream)}), base, routes, s, "alice", func(string, error) {})
			got, err := io.ReadAll(w)
			if (err != nil) != tc.err {
				t.Fatalf("%s\nerror %v, want error %v", tc.reason, err, tc.err)
			}
			if tc.err {
				if !errors.Is(err, errForeignEndpoint) {
					t.Errorf("%s\nerror %v, want errForeignEndpoint", tc.reason, err)
				}
				return
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("%s\nrelayed: -want +got:\n%s", tc.reason, diff)
			}
			if tc.learned == "" {
				return
			}
			if m, _ := routes.Match(tc.learned); m.Kind != route.Messages {
				t.Errorf("%s\n%s not learned", tc.reason, tc.learned)
			}
			data := strings.Fields(strings.Split(tc.want, "data: ")[1])[0]
			u, _ := url.Parse(data)
			q := u.Query()
			if !s.allowed(tc.learned, q, "alice") || s.allowed(tc.learned, q, "bob") {
				t.Errorf("%s\nthe session is not bound to alice", tc.reason)
			}
			_ = w.Close()
			if !s.allowed(tc.learned, q, "bob") {
				t.Errorf("%s\nthe session stays bound after its stream closed", tc.reason)
			}
		})
	}
}

// slowReader returns at most 3 bytes a read: events arrive in pieces.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > 3 {
		p = p[:3]
	}
	return s.r.Read(p)
}

// FuzzSurface: whatever the method, path, headers and body, the handler never panics, and
// what reaches the upstream obeys the surface's rules: a method its route allows, under the
// endpoint's path or an allow-listed one, a body only with POST (parsed, for an endpoint: the
// bytes the client sent, which the parser accepted) or a pass-through PUT/PATCH, and the
// identity the proxy read.
func FuzzSurface(f *testing.F) {
	for _, s := range []struct {
		method, path, body string
		hdr                byte
	}{
		{"POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`, 0},
		{"GET", "/MCP/", "", 1},
		{"HEAD", "/health", "GET /x HTTP/1.1\r\n\r\n", 2},
		{"PUT", "/oauth/x", "a=b", 3},
		{"DELETE", "//mcp;x", "{}", 4},
		{"OPTIONS", "/mcp", "", 5},
		{"POST", "/messages?sessionId=1", `[{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"FILE:///x"}}]`, 6},
		{"PATCH", "/mcp%2F", "{}", 7},
		{"GET", "/ws", "", 8},
	} {
		f.Add(s.method, s.path, s.body, s.hdr)
	}
	fx := newFixture(f, &v1alpha1.RateLimitConfig{Shared: bucket(1_000_000, time.Second)}, v1alpha1.ProxyResponses{},
		withRoutes([]string{"/messages"},
			v1alpha1.PassthroughPath{Path: "/health"},
			v1alpha1.PassthroughPath{Path: "/oauth", PathType: v1alpha1.PathTypePrefix},
			v1alpha1.PassthroughPath{Path: "/ws", AllowUpgrade: true}))
	headerSets := []map[string]string{
		{}, {"X-User": "a"}, {"Connection": "x-user", "X-User": "a"}, {"X_user": "b", "X-User": "a"},
		{"Upgrade": "websocket", "Connection": "upgrade"}, {"Upgrade": "h2c", "Connection": "Upgrade"},
		{"Content-Encoding": "gzip"}, {"Transfer-Encoding": "chunked"}, {"Mcp-Method": "tools/list"},
	}
	f.Fuzz(func(t *testing.T, method, path, body string, hdr byte) {
		u, err := url.ParseRequestURI(path)
		if err != nil || method == "" || strings.ContainsAny(method, " \t\r\n") {
			return // the server answers 400 before the handler
		}
		r := httptest.NewRequest(http.MethodGet, "http://proxy/", http.NoBody)
		r.Method, r.URL, r.RequestURI = method, u, path
		r.RemoteAddr = "127.0.0.1:5555"
		if body != "" {
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
		}
		for k, v := range headerSets[int(hdr)%len(headerSets)] {
			r.Header[k] = []string{v}
		}
		if r.Header.Get("Transfer-Encoding") != "" {
			r.TransferEncoding, r.ContentLength = []string{"chunked"}, -1
		}
		before := fx.upstream.Load()
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, r)
		if fx.upstream.Load() == before {
			return
		}
		fx.mu.Lock()
		defer fx.mu.Unlock()
		m, err := fx.h.routes.Match(u.EscapedPath())
		if err != nil || m.Kind == route.NotFound {
			t.Fatalf("%s %q reached the upstream as %s %q, but the proxy routes it nowhere", method, path, fx.lastMethod, fx.lastURI)
		}
		if got, _, _ := strings.Cut(fx.lastURI, "?"); got != m.Path {
			t.Fatalf("%s %q reached the upstream under %q, want %q", method, path, got, m.Path)
		}
		allow := map[route.Kind]string{route.Endpoint: allowEndpoint, route.Messages: allowMessages, route.Passthrough: allowPassthrough}[m.Kind]
		if !tokenIn(allow, fx.lastMethod) {
			t.Fatalf("%s %q reached the upstream with method %s, not one of %s", method, path, fx.lastMethod, allow)
		}
		if len(fx.lastBody) > 0 {
			switch {
			case fx.lastMethod == http.MethodPost && m.Kind != route.Passthrough:
				if _, perr := mcp.Parse(fx.lastBody); perr != nil || string(fx.lastBody) != body {
					t.Fatalf("%s %q: the upstream got a body the proxy did not parse as sent: %q", method, path, fx.lastBody)
				}
			case m.Kind == route.Passthrough && (fx.lastMethod == http.MethodPost || fx.lastMethod == http.MethodPut || fx.lastMethod == http.MethodPatch):
			default:
				t.Fatalf("%s %q: a body reached the upstream with %s", method, path, fx.lastMethod)
			}
		}
		if got, want := fx.lastHeader.Values("X-User"), r.Header.Values("X-User"); !cmp.Equal(got, want, cmpopts.EquateEmpty()) {
			t.Fatalf("%s %q: the upstream got X-User %q, the proxy read %q", method, path, got, want)
		}
	})
}

// fakeDecider answers every decision the same: the request path needs no Redis to be tested.
type fakeDecider struct {
	d   ratelimit.Decision
	err error
}

func (f fakeDecider) AllowAll(context.Context, []ratelimit.Request) (ratelimit.Decision, error) {
	return f.d, f.err
}
func (fakeDecider) PerUserApplies([]ratelimit.Request) bool { return false }
func (fakeDecider) Buckets() []ratelimit.BucketID           { return nil }

// TestOutcomes: each outcome of a decision becomes the answer and the count it names, under
// the config's mode and failure policy (ratelimit.OutcomeOf).
func TestOutcomes(t *testing.T) {
	storeDown := errors.New("dial tcp: connection refused")
	rejected := ratelimit.Decision{RetryAfter: time.Second, Rejected: &ratelimit.BucketState{BucketID: ratelimit.BucketID{Scope: ratelimit.ScopeShared}}}
	cases := map[string]struct {
		reason  string
		decider fakeDecider
		cfg     v1alpha1.RateLimitConfig
		status  int
		outcome ratelimit.Outcome
	}{
		"Allowed":       {"Admitted: forwarded.", fakeDecider{d: ratelimit.Decision{Allowed: true}}, v1alpha1.RateLimitConfig{}, 200, ratelimit.OutcomeAllowed},
		"Rejected":      {"Rejected: 429.", fakeDecider{d: rejected}, v1alpha1.RateLimitConfig{}, 429, ratelimit.OutcomeRejected},
		"Shadow":        {"Rejected in Shadow mode: forwarded, counted.", fakeDecider{d: rejected}, v1alpha1.RateLimitConfig{Mode: v1alpha1.RateLimitModeShadow}, 200, ratelimit.OutcomeShadowRejected},
		"Invalid":       {"No wait admits it: 429, never failed open.", fakeDecider{err: &ratelimit.RequestError{Reason: "too big"}}, v1alpha1.RateLimitConfig{}, 429, ratelimit.OutcomeInvalid},
		"FailOpen":      {"The store is down, policy Allow: forwarded.", fakeDecider{err: storeDown}, v1alpha1.RateLimitConfig{}, 200, ratelimit.OutcomeFailOpen},
		"FailClosed":    {"The store is down, policy Deny: 503.", fakeDecider{err: storeDown}, v1alpha1.RateLimitConfig{FailurePolicy: v1alpha1.FailurePolicyDeny}, 503, ratelimit.OutcomeFailClosed},
		"InvalidShadow": {"Not even Shadow mode fails such a request open; it is let through as shadow_rejected.", fakeDecider{err: &ratelimit.RequestError{Reason: "too big"}}, v1alpha1.RateLimitConfig{Mode: v1alpha1.RateLimitModeShadow}, 200, ratelimit.OutcomeShadowRejected},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
			defer up.Close()
			u, _ := url.Parse(up.URL + "/mcp")
			authn, _ := auth.New(t.Context(), v1alpha1.ProxyAuth{Anonymous: &v1alpha1.AnonymousAuth{}})
			m := NewMetrics(prometheus.NewRegistry())
			h := New(Options{Upstream: u, Auth: authn, Metrics: m}, Limits{Limiter: tc.decider, Config: &tc.cfg})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("1", "t"))))
			got := testutil.ToFloat64(m.decisions.WithLabelValues(ratelimit.MethodToolsCall, string(tc.outcome), ""))
			if w.Code != tc.status || got != 1 {
				t.Errorf("%s\nstatus %d (want %d), %s counted %v times (want 1)", tc.reason, w.Code, tc.status, tc.outcome, got)
			}
		})
	}
}

// TestDegraded: with failurePolicy Local a store failure hands the decision to the local
// buckets (degraded_allowed, degraded_rejected with the usual 429), degraded mode is entered
// once, and the first answer from the store leaves it.
func TestDegraded(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
	defer up.Close()
	u, _ := url.Parse(up.URL + "/mcp")
	authn, _ := auth.New(t.Context(), v1alpha1.ProxyAuth{Anonymous: &v1alpha1.AnonymousAuth{}})
	m := NewMetrics(prometheus.NewRegistry())
	storeDown := fakeDecider{err: errors.New("connection refused")}
	rejected := ratelimit.Decision{RetryAfter: 2 * time.Second, Rejected: &ratelimit.BucketState{BucketID: ratelimit.BucketID{Scope: ratelimit.ScopeShared}}}
	cfg := &v1alpha1.RateLimitConfig{FailurePolicy: v1alpha1.FailurePolicyLocal}
	h := New(Options{Upstream: u, Auth: authn, Metrics: m}, Limits{Limiter: storeDown, Local: fakeDecider{d: ratelimit.Decision{Allowed: true}}, Config: cfg})
	post := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("1", "t"))))
		return w
	}
	gauge := func() float64 {
		return testutil.ToFloat64(m.decisions.WithLabelValues(ratelimit.MethodToolsCall, string(ratelimit.OutcomeDegradedAllowed), ""))
	}
	if w := post(); w.Code != 200 || gauge() != 1 {
		t.Errorf("store down, local admits: %d, degraded_allowed %v", w.Code, gauge())
	}
	if on, _ := h.Degraded(); !on {
		t.Error("not degraded after a store failure under Local")
	}
	h.Update(Limits{Limiter: storeDown, Local: fakeDecider{d: rejected}, Config: cfg})
	if w := post(); w.Code != 429 || w.Header().Get("Retry-After") != "2" {
		t.Errorf("store down, local refuses: %d, Retry-After %q; want 429 with the local wait", w.Code, w.Header().Get("Retry-After"))
	}
	h.Update(Limits{Limiter: fakeDecider{d: ratelimit.Decision{Allowed: true}}, Local: fakeDecider{d: rejected}, Config: cfg})
	if w := post(); w.Code != 200 {
		t.Errorf("store back: %d", w.Code)
	}
	if on, _ := h.Degraded(); on {
		t.Error("still degraded after the store answered")
	}
}
