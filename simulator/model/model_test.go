package model

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

func bucket(n int32, d time.Duration) *v1alpha1.RateLimitBucket {
	return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: d}}
}

type step struct {
	at    time.Duration
	user  string
	calls []traffic.Call
}

func tool(name string, cost int32) traffic.Call {
	return traffic.Call{Method: "tools/call", Name: name, Cost: cost}
}

// brief renders a verdict compactly: "rejected 333.334ms [user 0/w333.334ms shared 9]".
func brief(v Verdict) string {
	s := string(v.Outcome)
	if v.RetryAfter > 0 {
		s += " " + v.RetryAfter.String()
	}
	var bs []string
	for _, b := range v.Buckets {
		x := fmt.Sprintf("%s %d", b.ID, b.Remaining)
		if b.Wait > 0 {
			x += "/w" + b.Wait.String()
		}
		bs = append(bs, x)
	}
	if len(bs) > 0 {
		s += " [" + strings.Join(bs, ", ") + "]"
	}
	return s
}

func TestDecide(t *testing.T) {
	cases := map[string]struct {
		reason string
		cfg    *v1alpha1.RateLimitConfig
		steps  []step
		want   []string
	}{
		"CapacityThenExactWait": {
			reason: "a full bucket admits maxTokens at once; the next waits exactly one token's refill, rounded up to the µs",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(3, time.Second)},
			steps:  []step{{0, "a", []traffic.Call{tool("s", 1)}}, {0, "a", []traffic.Call{tool("s", 1)}}, {0, "a", []traffic.Call{tool("s", 1)}}, {0, "a", []traffic.Call{tool("s", 1)}}},
			want:   []string{"allowed [user 2]", "allowed [user 1]", "allowed [user 0]", "rejected 333.334ms [user 0/w333.334ms]"},
		},
		"ContinuousRefill": {
			reason: "half a period refills half the tokens, fractions kept",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(3, time.Second)},
			steps: []step{
				{0, "a", []traffic.Call{tool("s", 3)}},
				{500 * time.Millisecond, "a", []traffic.Call{tool("s", 1)}},
				{500 * time.Millisecond, "a", []traffic.Call{tool("s", 1)}},
				{time.Hour, "a", []traffic.Call{tool("s", 1)}},
			},
			want: []string{"allowed [user 0]", "allowed [user 0]", "rejected 166.667ms [user 0/w166.667ms]", "allowed [user 2]"},
		},
		"AllOrNothing": {
			reason: "a per-user rejection takes nothing from the shared bucket",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(10, time.Second), PerUser: bucket(1, time.Second)},
			steps:  []step{{0, "a", []traffic.Call{tool("s", 1)}}, {0, "a", []traffic.Call{tool("s", 1)}}, {0, "b", []traffic.Call{tool("s", 1)}}},
			want:   []string{"allowed [user 0, shared 9]", "rejected 1s [user 0/w1s, shared 9]", "allowed [user 0, shared 8]"},
		},
		"LargestWaitWins": {
			reason: "RetryAfter is the largest wait among the short buckets",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, 10*time.Second), PerUser: bucket(1, time.Second)},
			steps:  []step{{0, "a", []traffic.Call{tool("s", 1)}}, {0, "a", []traffic.Call{tool("s", 1)}}},
			want:   []string{"allowed [user 0, shared 0]", "rejected 10s [user 0/w1s, shared 0/w10s]"},
		},
		"EntryWeightAndBatch": {
			reason: "an entry's cost weighs every bucket of the call; a batch sums its calls per bucket",
			cfg: &v1alpha1.RateLimitConfig{PerUser: bucket(20, time.Second),
				Tools: []v1alpha1.ToolRateLimitConfig{{Name: "gen", Cost: 5, Shared: bucket(10, time.Second)}}},
			steps: []step{{0, "a", []traffic.Call{tool("gen", 1), tool("other", 2)}}, {0, "a", []traffic.Call{tool("gen", 1), tool("gen", 1)}}},
			want:  []string{"allowed [user 13, tool:gen 5]", "rejected 500ms [user 13, tool:gen 5/w500ms]"},
		},
		"CostAboveCapacity": {
			reason: "a cost no bucket can ever hold is invalid, not a wait",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(3, time.Second)},
			steps:  []step{{0, "a", []traffic.Call{tool("s", 4)}}},
			want:   []string{"invalid"},
		},
		"Anonymous": {
			reason: "anonymous callers skip per-user buckets, and are refused when one applies",
			cfg: &v1alpha1.RateLimitConfig{Shared: bucket(5, time.Second),
				Tools: []v1alpha1.ToolRateLimitConfig{{Name: "mine", PerUser: bucket(1, time.Second)}}},
			steps: []step{{0, "", []traffic.Call{tool("s", 1)}}, {0, "", []traffic.Call{tool("mine", 1)}}},
			want:  []string{"allowed [shared 4]", "unidentified"},
		},
		"ResourceSpellings": {
			reason: "resources match by normalised URI; the bucket keeps the configured name",
			cfg:    &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "https://Ex.com/a", Shared: bucket(2, time.Minute)}}},
			steps: []step{
				{0, "a", []traffic.Call{{Method: "resources/read", Name: "https://ex.com:443/x/../a", Cost: 1}}},
				{0, "b", []traffic.Call{{Method: "resources/read", Name: "HTTPS://EX.COM/a", Cost: 1}}},
				{0, "b", []traffic.Call{{Method: "resources/read", Name: "https://ex.com/b", Cost: 1}}},
			},
			want: []string{`allowed [resource:https://Ex.com/a 1]`, `allowed [resource:https://Ex.com/a 0]`, "allowed"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := New(tc.cfg)
			var got []string
			for _, s := range tc.steps {
				got = append(got, brief(m.Decide(s.at.Microseconds(), s.user, "", s.calls)))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestSweepChangesNothing steps two models through the same calls, one sweeping after each:
// forgetting the buckets that are full again changes no decision, and the sweeping model
// ends up holding only the buckets not yet full.
func TestSweepChangesNothing(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{
		Shared: bucket(50, time.Second), PerUser: bucket(3, 2*time.Second),
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "s", PerUser: bucket(2, time.Second)}},
	}
	kept, swept := New(cfg), New(cfg)
	var at int64
	for i := range 20000 {
		at += int64(i%7) * 1000
		user := fmt.Sprintf("u%d", i%3000)
		calls := []traffic.Call{{Method: ratelimit.MethodToolsCall, Name: "s", Cost: 1}}
		want, got := kept.Decide(at, user, "", calls), swept.Decide(at, user, "", calls)
		swept.Sweep(at)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("call %d at %d µs: -without sweeping +with:\n%s", i, at, diff)
		}
	}
	if swept.Buckets() >= kept.Buckets() {
		t.Errorf("sweeping kept %d buckets, as many as the %d never swept", swept.Buckets(), kept.Buckets())
	}
}

// TestDecideTiers shows the model choosing buckets by tier: a tier's perUser and tools
// replace the default per-user buckets for its users (kept apart from the default ones),
// an unlimited tier has no per-user bucket but still meets the shared ones, a tool only a
// tier limits limits only that tier, and a tier the config does not have is invalid (as in
// the limiter).
func TestDecideTiers(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{
		Shared: bucket(100, time.Second), PerUser: bucket(2, time.Second),
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucket(1, time.Second)}},
		Tiers: []v1alpha1.RateLimitTier{
			{Name: "pro", PerUser: bucket(5, time.Second), Tools: []v1alpha1.TierToolLimit{
				{Name: "search", PerUser: *bucket(3, time.Second)}, {Name: "fetch", PerUser: *bucket(1, time.Second)}}},
			{Name: "staff", Unlimited: true},
		},
	}
	type tierStep struct {
		user, tier string
		call       traffic.Call
	}
	cases := map[string]struct {
		reason string
		steps  []tierStep
		want   []string
	}{
		"DefaultUser": {
			reason: "no tier: the default per-user buckets; a tool only a tier limits is not limited",
			steps:  []tierStep{{"ann", "", tool("search", 1)}, {"ann", "", tool("fetch", 1)}},
			want:   []string{"allowed [user 1, tool:search:user 0, shared 99]", "allowed [user 0, shared 98]"},
		},
		"ProUser": {
			reason: "the tier's buckets replace the default ones, named with the tier",
			steps:  []tierStep{{"bob", "pro", tool("search", 1)}, {"bob", "pro", tool("fetch", 1)}, {"bob", "pro", tool("fetch", 1)}},
			want: []string{
				"allowed [user@pro 4, tool:search:user@pro 2, shared 99]",
				"allowed [user@pro 3, tool:fetch:user@pro 0, shared 98]",
				"rejected 1s [user@pro 3, tool:fetch:user@pro 0/w1s, shared 98]",
			},
		},
		"MovesTier": {
			reason: "a user's default and tier buckets are apart: moving to pro starts from full ones",
			steps:  []tierStep{{"cy", "", tool("x", 2)}, {"cy", "pro", tool("x", 2)}},
			want:   []string{"allowed [user 0, shared 98]", "allowed [user@pro 3, shared 96]"},
		},
		"Unlimited": {
			reason: "an unlimited tier meets no per-user bucket, the shared one still applies",
			steps:  []tierStep{{"dee", "staff", tool("search", 100)}, {"dee", "staff", tool("search", 1)}},
			want:   []string{"allowed [shared 0]", "rejected 10ms [shared 0/w10ms]"},
		},
		"UnknownTier": {
			reason: "a tier the config does not name is never admitted",
			steps:  []tierStep{{"eve", "gold", tool("search", 1)}},
			want:   []string{"invalid"},
		},
		"Anonymous": {
			reason: "with tiers, every limited call needs an identity",
			steps:  []tierStep{{"", "", tool("fetch", 1)}},
			want:   []string{"unidentified"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := New(cfg)
			var got []string
			for _, s := range tc.steps {
				got = append(got, brief(m.Decide(0, s.user, s.tier, []traffic.Call{s.call})))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
