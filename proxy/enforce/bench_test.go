package enforce

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// cannedUpstream answers every request without a network.
type cannedUpstream struct{}

func (cannedUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	const answer = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}`
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(answer)),
		ContentLength: int64(len(answer)),
		Request:       r,
	}, nil
}

// BenchmarkHandler is one tools/call through the handler, Redis and the network stubbed out:
// admitted, with the four buckets of hack/benchproxy, and refused, a user's spent bucket
// answered by the deny cache (the cost of one call of a rejected flood). Its allocations per
// request are the proxy's own.
//
//	go test ./proxy/enforce -run '^$' -bench Handler -benchmem
func BenchmarkHandler(b *testing.B) {
	generous := bucket(1_000_000, time.Second)
	cases := map[string]struct {
		cfg  *v1alpha1.RateLimitConfig
		want int
	}{
		"Admitted": {cfg: &v1alpha1.RateLimitConfig{Shared: generous, PerUser: generous,
			Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}}}, want: http.StatusOK},
		"Rejected": {cfg: &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucket(1, time.Hour)}}},
			want: http.StatusTooManyRequests},
	}
	for name, tc := range cases {
		b.Run(name, func(b *testing.B) {
			// The limiter's script in process (the memory store's): the benchmark measures
			// the handler's own work (parsing, identity, keys, headers, metrics, forwarding
			// or refusing), not Redis.
			lim, err := ratelimit.New(ratelimit.NewLocalStore(ratelimit.LocalOptions{}), "bench", "search", tc.cfg,
				ratelimit.WithDenyCache(ratelimit.DefaultDenyCacheEntries))
			if err != nil {
				b.Fatal(err)
			}
			authn, err := auth.New(b.Context(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "X-User"}})
			if err != nil {
				b.Fatal(err)
			}
			u, _ := url.Parse("http://127.0.0.1:1/mcp")
			h := New(Options{Upstream: u, Auth: authn, Transport: cannedUpstream{}, Metrics: NewMetrics(prometheus.NewRegistry())},
				Limits{Limiter: lim, Config: tc.cfg})
			const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"tollgate"}}}`
			call := func() *httptest.ResponseRecorder {
				r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Accept", "application/json, text/event-stream")
				r.Header.Set("X-User", "user-1")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w
			}
			if tc.want == http.StatusTooManyRequests {
				call() // takes the one token
			}
			b.ReportAllocs()
			for b.Loop() {
				if w := call(); w.Code != tc.want {
					b.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
				}
			}
		})
	}
}

// TestForwarding: the buffered request body reaches the upstream whole, once (the in-memory
// reader Rewrite puts in place of ReverseProxy's), and a response larger than the pooled
// copy buffers reaches the client byte for byte, twice in a row (the buffers are reused).
func TestForwarding(t *testing.T) {
	answer := strings.Repeat("0123456789abcdef", 5000) // 80 000 bytes: over two 32 KiB buffers
	var got []string
	up := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		got = append(got, fmt.Sprintf("%T %s", r.Body, b))
		return &http.Response{
			StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(answer)), ContentLength: int64(len(answer)), Request: r,
		}, nil
	})
	authn, err := auth.New(t.Context(), v1alpha1.ProxyAuth{Anonymous: &v1alpha1.AnonymousAuth{}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://127.0.0.1:1/mcp")
	h := New(Options{Upstream: u, Auth: authn, Transport: up}, Limits{})
	const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search"}}`
	for i := range 2 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body)))
		if w.Code != http.StatusOK || w.Body.String() != answer {
			t.Fatalf("call %d: status %d, %d bytes of the answer's %d", i, w.Code, w.Body.Len(), len(answer))
		}
	}
	// io.NopCloser of a *bytes.Reader: a reader the transport knows is in memory, so it
	// writes headers and body together (ReverseProxy's own wrapper would be
	// *httputil.noopCloseReader).
	want := "io.nopCloserWriterTo " + body
	if diff := cmp.Diff([]string{want, want}, got); diff != "" {
		t.Errorf("bodies the upstream read, with their reader's type: -want +got:\n%s", diff)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
