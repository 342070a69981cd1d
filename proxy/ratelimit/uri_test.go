package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// TestResourceSpellingsShareABucket: every spelling of file:///data/report.txt that the
// TypeScript SDK serves as that resource takes from its one bucket (internal/resourceuri
// proves the canonical form against Node's WHATWG parser); a URI with no canonical form is a
// request error, never a bucket of its own.
func TestResourceSpellingsShareABucket(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = c.Close() }()
	l, err := New(c, "ns", "srv", &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{
		{URI: "FILE://localhost/data/./report.txt", Shared: bucketOf(1, time.Hour)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spellings := []string{
		"file:///data/report.txt", "file://localhost/data/report.txt", "file:/data/report.txt", "file:data/report.txt",
		`file:\\\data\report.txt`, " file:///data/report.txt", "file:///da\tta/report.txt\n", "file:///data/x/../report.txt",
		"file:///data/%2e/report.txt", "file:///dat%61/report.txt",
	}
	for i, u := range spellings {
		d, err := l.Allow(ctx, Request{Method: MethodResourcesRead, Name: u})
		if err != nil {
			t.Fatalf("%q: %v", u, err)
		}
		if d.Allowed != (i == 0) {
			t.Errorf("%q: allowed %v; every spelling shares the one-token bucket", u, d.Allowed)
		}
	}
	if _, err := l.Allow(ctx, Request{Method: MethodResourcesRead, Name: "data/report.txt"}); err == nil {
		t.Error("a relative reference (no canonical form) was decided; want a RequestError")
	}
	if _, err := New(c, "ns", "srv", &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{
		{URI: "no scheme", Shared: bucketOf(1, time.Hour)},
	}}); err == nil {
		t.Error("an entry with no canonical form was accepted")
	}
}
