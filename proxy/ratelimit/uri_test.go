package ratelimit

import (
	"context"
	"slices"
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

// TestNextToken: a bucket of 2 per 90 s, emptied, holds its next token in 45 s and is full in
// 90 s; the RateLimit header's t is the former (the draft's "additional quota").
func TestNextToken(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = c.Close() }()
	l, err := New(c, "ns", "srv", &v1alpha1.RateLimitConfig{Shared: bucketOf(2, 90*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	var d Decision
	for range 2 {
		if d, err = l.Allow(t.Context(), Request{Method: MethodToolsCall, Name: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	got := []time.Duration{d.Buckets[0].NextToken, d.Buckets[0].Reset}
	if want := []time.Duration{45 * time.Second, 90 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("next token, full: %v, want %v", got, want)
	}
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC))
	d, _ = l.Allow(t.Context(), Request{Method: MethodToolsCall, Name: "x"})
	if d.Allowed || d.RetryAfter != 35*time.Second || d.Buckets[0].NextToken != 35*time.Second {
		t.Errorf("10 s later: allowed %v, retry after %v, next token %v; want a rejection, 35s, 35s", d.Allowed, d.RetryAfter, d.Buckets[0].NextToken)
	}
}

// TestDividedConfig: shared buckets (and per-user ones when asked) are divided among the
// replicas, at least one token each; the rest is untouched.
func TestDividedConfig(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{
		Shared:  bucketOf(100, time.Minute),
		PerUser: bucketOf(10, time.Minute),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "a", Shared: bucketOf(2, time.Second), PerUser: bucketOf(4, time.Second)}},
	}
	tokens := func(c *v1alpha1.RateLimitConfig) []int32 {
		return []int32{c.Shared.MaxTokens, c.PerUser.MaxTokens, c.Tools[0].Shared.MaxTokens, c.Tools[0].PerUser.MaxTokens}
	}
	if got := tokens(DividedConfig(cfg, 3)); !slices.Equal(got, []int32{33, 10, 1, 4}) {
		t.Errorf("3 replicas: %v, want shared divided (at least 1), per-user kept", got)
	}
	cfg.Local = &v1alpha1.LocalFailurePolicy{DividePerUser: true}
	if got := tokens(DividedConfig(cfg, 3)); !slices.Equal(got, []int32{33, 3, 1, 1}) {
		t.Errorf("3 replicas, per-user divided too: %v", got)
	}
	if got := tokens(cfg); !slices.Equal(got, []int32{100, 10, 2, 4}) {
		t.Errorf("the config itself changed: %v", got)
	}
	if DividedConfig(cfg, 1) != cfg {
		t.Error("one replica: the config itself")
	}
}
