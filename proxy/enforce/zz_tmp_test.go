package enforce

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func BenchmarkTmpRejected(b *testing.B) {
	cfg := &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucket(1, time.Hour)}}}
	lim, err := ratelimit.New(ratelimit.NewLocalStore(ratelimit.LocalOptions{}), "bench", "search", cfg, ratelimit.WithDenyCache(1000))
	if err != nil {
		b.Fatal(err)
	}
	authn, _ := auth.New(b.Context(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "X-User"}})
	u, _ := url.Parse("http://127.0.0.1:1/mcp")
	h := New(Options{Upstream: u, Auth: authn, Transport: cannedUpstream{}, Metrics: NewMetrics(prometheus.NewRegistry())},
		Limits{Limiter: lim, Config: cfg})
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"tollgate"}}}`
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("X-User", "user-1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if i > 0 && w.Code != http.StatusTooManyRequests {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
