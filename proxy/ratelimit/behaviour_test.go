package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// TestExpiryNeverChangesADecision replays one random sequence twice on each backend, once with
// key expiry and once with keys kept forever: every decision must be the same, because a key
// expires only when its bucket would be full, and a missing key reads as a full bucket.
func TestExpiryNeverChangesADecision(t *testing.T) {
	// Every bucket gains one token in a whole multiple of 10 s and events fall on multiples of
	// 10 s, so a level is never within 10 s of a boundary: the few ms a real redis-server's
	// clock moves during the run cannot flip a decision.
	cfg := &v1alpha1.RateLimitConfig{
		Shared:  bucketOf(20, 10000*time.Second),
		PerUser: bucketOf(5, 3000*time.Second),
		Tools: []v1alpha1.ToolRateLimitConfig{
			{Name: "a", Shared: bucketOf(3, 900*time.Second), PerUser: bucketOf(2, 7000*time.Second)},
			{Name: "b", PerUser: bucketOf(1, 500*time.Second), Cost: 1},
		},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	type event struct {
		after time.Duration
		req   Request
	}
	events := make([]event, 400)
	for i := range events {
		events[i] = event{
			// Mostly short gaps, sometimes long ones that let keys expire.
			after: time.Duration(rng.IntN(40)) * 10 * time.Second,
			req:   tool([]string{"a", "b", "c"}[rng.IntN(3)], []string{"", "u1", "u2", "u3"}[rng.IntN(4)]),
		}
		if rng.IntN(10) == 0 {
			events[i].after = time.Duration(50+rng.IntN(200)) * 100 * time.Second
		}
	}
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			run := func(expire bool) (allowed []bool, keysSeen int) {
				st := be.open(t, expire)
				l, err := New(st.client, "tools", "demo", cfg)
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				for _, e := range events {
					st.advance(e.after)
					d, err := l.Allow(t.Context(), e.req)
					if err != nil {
						t.Fatalf("Allow: %v", err)
					}
					allowed = append(allowed, d.Allowed)
				}
				n, _ := st.client.DBSize(context.Background()).Result()
				return allowed, int(n)
			}
			withExpiry, keysWith := run(true)
			without, keysWithout := run(false)
			if diff := cmp.Diff(without, withExpiry); diff != "" {
				t.Errorf("decisions with expiry differ from decisions without (-without +with):\n%s", diff)
			}
			// The sequence must exercise expiry, else this test proves nothing.
			if keysWith >= keysWithout {
				t.Errorf("no key expired (%d keys with expiry, %d without): the sequence does not test expiry", keysWith, keysWithout)
			}
			admitted, rejectedN := 0, 0
			for _, a := range withExpiry {
				if a {
					admitted++
				} else {
					rejectedN++
				}
			}
			if admitted == 0 || rejectedN == 0 {
				t.Errorf("admitted %d, rejected %d: the sequence must do both", admitted, rejectedN)
			}
		})
	}
}

// TestTTLCoversRefill checks that a key lives at least until its bucket is full again.
func TestTTLCoversRefill(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t, true)
			l, err := New(st.client, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: bucketOf(10, 100*time.Second)})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			for range 4 {
				if _, err := l.Allow(t.Context(), tool("x", "")); err != nil {
					t.Fatalf("Allow: %v", err)
				}
			}
			d, err := l.Allow(t.Context(), tool("x", ""))
			if err != nil {
				t.Fatalf("Allow: %v", err)
			}
			keys, _ := st.client.Keys(context.Background(), "*").Result()
			if len(keys) != 1 {
				t.Fatalf("want 1 key, got %v", keys)
			}
			ttl, err := st.client.PTTL(context.Background(), keys[0]).Result()
			if err != nil {
				t.Fatalf("PTTL: %v", err)
			}
			// 5 tokens missing at 10 s each: full again in 50 s.
			if reset := d.Buckets[0].Reset; reset > 50*time.Second || reset < 50*time.Second-be.slack {
				t.Errorf("Reset: want 50s, got %s", reset)
			}
			if ttl < 50*time.Second-be.slack || ttl > 50*time.Second+time.Millisecond {
				t.Errorf("TTL: want about 50s (at least the time to refill to full), got %s", ttl)
			}
		})
	}
}

// TestConfigChange checks that a new config over the same keys takes effect on each bucket's
// next decision: a lowered capacity clamps the stored level, a new refill period keeps the
// level's fraction of a token.
func TestConfigChange(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			st := be.open(t, true)
			mustNew := func(b *v1alpha1.RateLimitBucket) *Limiter {
				l, err := New(st.client, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: b})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return l
			}
			remaining := func(l *Limiter) (int64, bool) {
				d, err := l.Allow(t.Context(), tool("x", ""))
				if err != nil {
					t.Fatalf("Allow: %v", err)
				}
				return d.Buckets[0].Remaining, d.Allowed
			}
			big := mustNew(bucketOf(100, 100*time.Second))
			if r, _ := remaining(big); r != 99 {
				t.Fatalf("remaining after one call of 100: want 99, got %d", r)
			}
			small := mustNew(bucketOf(5, 5*time.Second))
			if r, ok := remaining(small); r != 4 || !ok {
				t.Errorf("lowered to 5: want an admitted call leaving 4, got %d (allowed %v)", r, ok)
			}
			slow := mustNew(bucketOf(5, 500*time.Second))
			if r, ok := remaining(slow); r != 3 || !ok {
				t.Errorf("period 5s → 500s: want the 4 tokens kept and 3 left, got %d (allowed %v)", r, ok)
			}
		})
	}
}

// TestClockStepBack checks that a Redis clock that jumps back (a failover to a replica whose
// clock is behind) refills nothing and never makes a level negative.
func TestClockStepBack(t *testing.T) {
	mr := miniredis.RunT(t)
	now := miniredisEpoch
	mr.SetTime(now)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = c.Close() }()
	l, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: bucketOf(2, 10*time.Second)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var got []bool
	for _, at := range []time.Duration{0, 0, -time.Hour, -time.Hour, 5 * time.Second} {
		mr.SetTime(now.Add(at))
		d, err := l.Allow(t.Context(), tool("x", ""))
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		got = append(got, d.Allowed)
	}
	// Two tokens, then nothing while the clock is behind, then one token 5 s after the last
	// admitted call.
	if diff := cmp.Diff([]bool{true, true, false, false, true}, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	period := time.Minute
	cases := map[string]struct {
		reason    string
		namespace string
		cfg       *v1alpha1.RateLimitConfig
		opts      []Option
		want      string // a substring that names the bucket and the problem
		is        error  // a sentinel the error wraps, when the problem has one
	}{
		"MaxTokensZero": {
			reason: "maxTokens 0 can admit nothing.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucketOf(0, period)}}},
			want:   `tool "search" perUser bucket: maxTokens must be >= 1`,
		},
		"RefillPeriodZero": {
			reason: "A zero refill period has no rate.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(3, 0)},
			want:   "shared bucket: refillPeriod must be greater than 0",
		},
		"RefillPeriodNegative": {
			reason: "A negative refill period has no meaning.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(3, -time.Second)},
			want:   "perUser bucket: refillPeriod must be greater than 0",
		},
		"ProductAbove2To53": {
			reason: "maxTokens × refillPeriod in µs must stay exact in a double.",
			cfg:    &v1alpha1.RateLimitConfig{Prompts: []v1alpha1.PromptRateLimitConfig{{Name: "p", Shared: bucketOf(1_000_000, 8760*time.Hour)}}},
			want:   `prompt "p" shared bucket: maxTokens × refillPeriod is too large`,
		},
		"ProductWouldOverflowInt64": {
			reason: "1e9 tokens per 8760h overflows int64 if multiplied naively; it must still be refused.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(1_000_000_000, 8760*time.Hour)},
			want:   "shared bucket: maxTokens × refillPeriod is too large",
		},
		"EntryCostAboveCapacity": {
			reason: "A tool whose cost exceeds a bucket could never be called.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(3, period), Tools: []v1alpha1.ToolRateLimitConfig{{Name: "heavy", Shared: bucketOf(10, period), Cost: 5}}},
			want:   `tool "heavy": cost 5 exceeds the server shared bucket's maxTokens 3`,
		},
		"ResourceSpelledTwice": {
			reason: "Two spellings of one resource would be one bucket configured twice.",
			cfg: &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{
				{URI: "file:///a", Shared: bucketOf(1, period)}, {URI: "FILE:///./a", Shared: bucketOf(2, period)},
			}},
			want: `resource "FILE:///./a": the same resource as "file:///a" once canonicalised`,
			is:   v1alpha1.ErrSameResource,
		},
		"EntryWithoutBuckets": {
			reason: "An entry must set shared or perUser.",
			cfg:    &v1alpha1.RateLimitConfig{Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "file:///x"}}},
			want:   `resource "file:///x": must set shared or perUser`,
		},
		"DuplicateTool": {
			reason: "A tool listed twice is ambiguous.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "a", Shared: bucketOf(1, period)}, {Name: "a", Shared: bucketOf(2, period)}}},
			want:   `tool "a": listed more than once`,
		},
		"Empty": {
			reason: "rateLimiting: {} declares nothing.",
			cfg:    &v1alpha1.RateLimitConfig{},
			want:   "rateLimiting must set at least one of shared, perUser, tools, prompts or resources",
		},
		"TierBadName": {
			reason: "A tier name is a DNS-1123 label (a metric label value, and part of keys).",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "Pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, Unlimited: true}}},
			want:   `tiers[0]: name "Pro"`,
		},
		"TierDuplicate": {
			reason: "Two tiers of one name are ambiguous.",
			cfg: &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{
				{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, Unlimited: true},
				{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"x"}}, Unlimited: true},
			}},
			want: `tier "pro": listed more than once`,
		},
		"TierClaimAndHeader": {
			reason: "A match is a claim or a header, not both.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Header: "X-Plan", Values: []string{"pro"}}, Unlimited: true}}},
			want:   `tier "pro": match: set exactly one of claim and header`,
		},
		"TierNoValues": {
			reason: "A match with no value matches nobody.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan"}, Unlimited: true}}},
			want:   `tier "pro": match.values: at least one value`,
		},
		"TierBadHeader": {
			reason: "A header name is an HTTP token.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "gold", Match: v1alpha1.TierMatch{Header: "X Plan", Values: []string{"gold"}}, Unlimited: true}}},
			want:   `tier "gold": match.header "X Plan": not an HTTP header name`,
		},
		"TierUnlimitedWithBucket": {
			reason: "unlimited excludes buckets.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "staff", Match: v1alpha1.TierMatch{Claim: "g", Values: []string{"sre"}}, Unlimited: true, PerUser: bucketOf(5, period)}}},
			want:   `tier "staff": an unlimited tier has no per-user buckets`,
		},
		"TierEmpty": {
			reason: "A tier that changes nothing is a mistake.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}}}},
			want:   `tier "pro": must set perUser, tools or unlimited`,
		},
		"TierBucket": {
			reason: "A tier's buckets obey the bucket bounds, named by tier and tool.",
			cfg: &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, period), Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}},
				Tools: []v1alpha1.TierToolLimit{{Name: "search", PerUser: *bucketOf(0, period)}}}}},
			want: `tier "pro" tool "search" perUser bucket: maxTokens must be >= 1`,
		},
		"TierCostAboveCapacity": {
			reason: "A tool's cost must fit a tier's buckets as it must fit the default ones.",
			cfg: &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "heavy", Shared: bucketOf(10, period), Cost: 5}},
				Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, PerUser: bucketOf(3, period)}}},
			want: `tier "pro" perUser bucket: tool "heavy" costs 5, above its maxTokens 3`,
		},
		"TierToolCostAboveCapacity": {
			reason: "Likewise a tier's bucket for the tool itself.",
			cfg: &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "heavy", Shared: bucketOf(10, period), Cost: 5}},
				Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, Tools: []v1alpha1.TierToolLimit{{Name: "heavy", PerUser: *bucketOf(4, period)}}}}},
			want: `tier "pro" tool "heavy" perUser bucket: the tool costs 5, above its maxTokens 4`,
		},
		"BadNamespace": {
			reason:    "The namespace goes into the hash tag: it must be a DNS label.",
			namespace: "a}b",
			cfg:       &v1alpha1.RateLimitConfig{Shared: bucketOf(1, period)},
			want:      `namespace "a}b"`,
		},
		"BadPrefix": {
			reason: "A prefix with ':' or '{' would break the key scheme.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(1, period)},
			opts:   []Option{WithKeyPrefix("a{b")},
			want:   `key prefix "a{b"`,
		},
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer func() { _ = c.Close() }()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ns := tc.namespace
			if ns == "" {
				ns = "tools"
			}
			_, err := New(c, ns, "demo", tc.cfg, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s\nNew: want an error containing %q, got %v", tc.reason, tc.want, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%s\nNew: errors.Is(%v, %v) is false", tc.reason, err, tc.is)
			}
		})
	}
}

// TestRequestErrors checks that requests no wait could admit are refused with a
// RequestError naming the bucket — never a store error that a fail-open policy would let
// through — and that Redis is not called for them.
func TestRequestErrors(t *testing.T) {
	cases := map[string]struct {
		reason string
		reqs   []Request
		want   error
	}{
		"NegativeCost": {
			reason: "A negative cost would add tokens.",
			reqs:   []Request{{Method: MethodToolsCall, Name: "a", Cost: -1}},
			want:   &RequestError{Reason: "cost -1 is negative"},
		},
		"CostAboveCapacity": {
			reason: "Cost 4 against a bucket of 3 can never be admitted.",
			reqs:   []Request{{Method: MethodToolsCall, Name: "a", Cost: 4}},
			want:   &RequestError{Bucket: "shared", ID: BucketID{Scope: ScopeShared}, Reason: "cost 4 exceeds maxTokens 3: it can never be admitted"},
		},
		"BatchAboveCapacity": {
			reason: "A batch whose summed cost exceeds a bucket is refused whole.",
			reqs:   []Request{{Method: MethodToolsCall, Name: "a", UserID: "u"}, {Method: MethodToolsCall, Name: "a", UserID: "u"}},
			want:   &RequestError{Bucket: `tool:a:user`, ID: BucketID{Scope: ScopePerUser, Kind: "tool", Name: "a"}, Reason: "cost 2 exceeds maxTokens 1: it can never be admitted"},
		},
		"UnknownMethod": {
			reason: "Only tools/call, prompts/get and resources/read are limited.",
			reqs:   []Request{{Method: "tools/list"}},
			want:   &RequestError{Reason: `method "tools/list" is not rate limited`},
		},
		"UnknownTier": {
			reason: "A tier the config does not name cannot be decided (a stale tier after a reload is the caller's to resolve again).",
			reqs:   []Request{{Method: MethodToolsCall, Name: "a", UserID: "u", Tier: "gold"}},
			want:   &RequestError{Reason: `tier "gold" is not configured`},
		},
		"TierBatchAboveCapacity": {
			reason: "A tier's bucket bounds a batch as the default one does.",
			reqs:   []Request{{Method: MethodToolsCall, Name: "a", UserID: "u", Tier: "pro"}, {Method: MethodToolsCall, Name: "a", UserID: "u", Tier: "pro"}, {Method: MethodToolsCall, Name: "a", UserID: "u", Tier: "pro"}},
			want:   &RequestError{Bucket: `tool:a:user@pro`, ID: BucketID{Scope: ScopePerUser, Kind: "tool", Name: "a", Tier: "pro"}, Reason: "cost 3 exceeds maxTokens 2: it can never be admitted"},
		},
	}
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = c.Close() }()
	l, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{
		Shared: bucketOf(3, time.Minute),
		Tools:  []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: bucketOf(1, time.Minute)}},
		Tiers: []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}},
			Tools: []v1alpha1.TierToolLimit{{Name: "a", PerUser: *bucketOf(2, time.Minute)}}}},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := mr.CommandCount()
			d, err := l.AllowAll(t.Context(), tc.reqs)
			if diff := cmp.Diff(tc.want, err); diff != "" {
				t.Errorf("%s\nerror: -want +got:\n%s", tc.reason, diff)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s\nerrors.Is(err, ErrInvalidRequest) is false for %v", tc.reason, err)
			}
			if d.Allowed {
				t.Errorf("%s\nan invalid request was allowed", tc.reason)
			}
			if n := mr.CommandCount() - before; n != 0 {
				t.Errorf("%s\n%d Redis commands for an invalid request, want 0", tc.reason, n)
			}
		})
	}
}

// TestNilConfigNeverCallsRedis: without rate limiting everything is allowed and Redis is not
// touched.
func TestNilConfigNeverCallsRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = c.Close() }()
	for name, client := range map[string]redis.Scripter{"client": c, "nil client": nil} {
		t.Run(name, func(t *testing.T) {
			l, err := New(client, "tools", "demo", nil)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			before := mr.CommandCount()
			for i := range 100 {
				d, err := l.Allow(t.Context(), Request{Method: MethodToolsCall, Name: "t" + strconv.Itoa(i), UserID: "u", Cost: 1000})
				if err != nil || !d.Allowed {
					t.Fatalf("Allow: want allowed, got %+v, %v", d, err)
				}
			}
			if n := mr.CommandCount() - before; n != 0 {
				t.Errorf("nil config: %d Redis commands, want 0", n)
			}
		})
	}
}

// TestStoreErrorsAreNotRequestErrors: a Redis that cannot be reached gives an error the
// failure policy handles, not a RequestError.
func TestStoreErrorsAreNotRequestErrors(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer func() { _ = c.Close() }()
	l, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: bucketOf(3, time.Minute)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	_, err = l.Allow(t.Context(), tool("a", ""))
	if err == nil || errors.Is(err, ErrInvalidRequest) {
		t.Errorf("want a store error, got %v", err)
	}
}

func TestPerUserApplies(t *testing.T) {
	b := bucketOf(1, time.Minute)
	toolOnly := &v1alpha1.RateLimitConfig{
		Shared:    b,
		Tools:     []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: b}, {Name: "s", Shared: b}},
		Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "file:///x", PerUser: b}},
	}
	cases := map[string]struct {
		reason string
		cfg    *v1alpha1.RateLimitConfig
		reqs   []Request
		want   bool
	}{
		"ServerPerUser":    {"A server-level perUser bucket applies to every call.", &v1alpha1.RateLimitConfig{PerUser: b}, []Request{tool("anything", "")}, true},
		"ToolPerUser":      {"A tool's perUser bucket applies to that tool.", toolOnly, []Request{tool("a", "")}, true},
		"OtherTool":        {"It does not apply to another tool.", toolOnly, []Request{tool("s", ""), tool("z", "")}, false},
		"BatchWithOne":     {"One request of a batch is enough.", toolOnly, []Request{tool("s", ""), tool("a", "")}, true},
		"ResourceSpelling": {"Resources match normalised.", toolOnly, []Request{{Method: MethodResourcesRead, Name: "FILE:///./x"}}, true},
		"SharedOnly":       {"Shared buckets need no identity.", &v1alpha1.RateLimitConfig{Shared: b}, []Request{tool("a", "")}, false},
		"NilConfig":        {"Nothing configured, nothing applies.", nil, []Request{tool("a", "")}, false},
		"Tiers": {"With tiers every limited call needs an identity: a tier may be stricter than the default, and hiding who one is must not escape it.",
			&v1alpha1.RateLimitConfig{Shared: b, Tiers: []v1alpha1.RateLimitTier{{Name: "free", Match: v1alpha1.TierMatch{Header: "X-Plan", Values: []string{"free"}}, PerUser: b}}},
			[]Request{tool("z", "")}, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			l, err := New(noScripter{}, "tools", "demo", tc.cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := l.PerUserApplies(tc.reqs); got != tc.want {
				t.Errorf("%s\nPerUserApplies: want %v, got %v", tc.reason, tc.want, got)
			}
		})
	}
}
