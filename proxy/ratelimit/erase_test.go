package ratelimit

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// TestUserKeyPattern erases one user on a real redis-server the way docs/privacy.md says:
// SCAN with UserKeyPattern of the user's pseudonym, DEL what it finds. Every bucket of the
// user is found (server level, a tool's, a tier's), no other user's and no shared bucket, and
// afterwards the user's buckets are full again.
func TestUserKeyPattern(t *testing.T) {
	ctx := context.Background()
	c := testredis.Start(t).Client(t)
	b := func(n int32) *v1alpha1.RateLimitBucket {
		return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: time.Hour}}
	}
	cfg := &v1alpha1.RateLimitConfig{
		Shared:  b(100),
		PerUser: b(5),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: b(50), PerUser: b(2)}},
		Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Header: "X-Plan", Values: []string{"pro"}},
			PerUser: b(10), Tools: []v1alpha1.TierToolLimit{{Name: "search", PerUser: *b(4)}}}},
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	l, err := New(c, "tools", "search-server", cfg, WithKeyPrefix("tg"), WithUserHashKey(key))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Request{
		{Method: "tools/call", Name: "search", UserID: "alice@example.com"},
		{Method: "tools/call", Name: "search", UserID: "alice@example.com", Tier: "pro"},
		{Method: "tools/call", Name: "other", UserID: "alice@example.com"},
		{Method: "tools/call", Name: "search", UserID: "bob@example.com"},
	} {
		if d, err := l.Allow(ctx, r); err != nil || !d.Allowed {
			t.Fatalf("%+v: %+v, %v", r, d, err)
		}
	}
	alice, bob := HashUser(key, "alice@example.com"), HashUser(key, "bob@example.com")
	all, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range all {
		if strings.Contains(k, "alice") || strings.Contains(k, "bob") {
			t.Errorf("a user id in clear in key %q", k)
		}
		if strings.HasSuffix(k, ":"+alice) {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if len(want) != 4 { // user, user-tool search, and the tier's two
		t.Fatalf("alice's keys: %q, want 4", want)
	}
	var got []string
	iter := c.Scan(ctx, 0, UserKeyPattern("tg", "tools", "search-server", alice), 100).Iterator()
	for iter.Next(ctx) {
		got = append(got, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SCAN MATCH %s: -want +got:\n%s", UserKeyPattern("tg", "tools", "search-server", alice), diff)
	}
	if err := c.Del(ctx, got...).Err(); err != nil {
		t.Fatal(err)
	}
	left, _ := c.Keys(ctx, "*").Result()
	if n := len(left); n != len(all)-4 {
		t.Errorf("after erasing alice %d keys are left, want %d (bob's and the shared ones): %q", n, len(all)-4, left)
	}
	if !slices.ContainsFunc(left, func(k string) bool { return strings.HasSuffix(k, ":"+bob) }) {
		t.Error("bob's buckets were erased with alice's")
	}
	d, err := l.Allow(ctx, Request{Method: "tools/call", Name: "search", UserID: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bk := range d.Buckets {
		if bk.Scope == ScopePerUser && bk.Remaining != int64(bk.MaxTokens)-1 {
			t.Errorf("alice's %s bucket after erasure: %d left, want %d (full, minus this call)", bk.BucketID, bk.Remaining, bk.MaxTokens-1)
		}
	}
}
