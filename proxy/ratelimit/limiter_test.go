package ratelimit

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

func bucketOf(maxTokens int32, period time.Duration) *v1alpha1.RateLimitBucket {
	return &v1alpha1.RateLimitBucket{MaxTokens: maxTokens, RefillPeriod: metav1.Duration{Duration: period}}
}

func tool(name, user string) Request {
	return Request{Method: MethodToolsCall, Name: name, UserID: user}
}

// step is one decision of a case: let virtual time pass, then decide reqs (a batch when
// there are several) and compare the outcome.
type step struct {
	after time.Duration
	reqs  []Request
	want  outcome
}

// outcome is what a step checks of a Decision. Remaining holds only the buckets a case names.
type outcome struct {
	Allowed    bool
	RetryAfter time.Duration
	RejectedBy string
	Remaining  map[string]int64
}

func one(r Request, want outcome) step { return step{reqs: []Request{r}, want: want} }

var (
	ok = outcome{Allowed: true}
)

func rejected(by string, retryAfter time.Duration) outcome {
	return outcome{RejectedBy: by, RetryAfter: retryAfter}
}

type limiterCase struct {
	reason   string
	cfg      *v1alpha1.RateLimitConfig
	steps    []step
	wantKeys int // keys in Redis after the last step
}

func limiterCases() map[string]limiterCase {
	const minute = time.Minute
	return map[string]limiterCase{
		"SharedCapacity3": {
			reason: "A shared bucket of 3 admits 3 calls and rejects the 4th, with the time to one token.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(3, minute)},
			steps: []step{
				one(tool("echo", ""), ok), one(tool("echo", ""), ok), one(tool("echo", ""), ok),
				one(tool("echo", ""), rejected("shared", 20*time.Second)),
			},
			wantKeys: 1,
		},
		"SharedCapacity1": {
			reason: "A shared bucket of 1 rejects the 2nd call for a whole refill period.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(1, minute)},
			steps: []step{
				one(tool("echo", ""), ok),
				one(tool("echo", ""), rejected("shared", minute)),
			},
			wantKeys: 1,
		},
		"AllOrNothing": {
			reason: "Server 5 and tool 2: the tool bucket rejects the 3rd call and the server bucket keeps exactly 3 tokens.",
			cfg: &v1alpha1.RateLimitConfig{
				Shared: bucketOf(5, minute),
				Tools:  []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: bucketOf(2, minute)}},
			},
			steps: []step{
				one(tool("search", ""), ok), one(tool("search", ""), ok),
				one(tool("search", ""), outcome{RejectedBy: `tool:search`, RetryAfter: 30 * time.Second,
					Remaining: map[string]int64{"shared": 3, `tool:search`: 0}}),
				one(tool("other", ""), outcome{Allowed: true, Remaining: map[string]int64{"shared": 2}}),
			},
			wantKeys: 2,
		},
		"PerToolIsolation": {
			reason: "Exhausting one tool's bucket leaves another tool's alone.",
			cfg: &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{
				{Name: "a", Shared: bucketOf(1, minute)}, {Name: "b", Shared: bucketOf(1, minute)},
			}},
			steps: []step{
				one(tool("a", ""), ok), one(tool("a", ""), rejected(`tool:a`, minute)),
				one(tool("b", ""), ok), one(tool("b", ""), rejected(`tool:b`, minute)),
			},
			wantKeys: 2,
		},
		"PerUserIsolation": {
			reason: "Exhausting one user's bucket leaves another user's alone.",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, minute)},
			steps: []step{
				one(tool("echo", "alice"), ok), one(tool("echo", "alice"), rejected("user", minute)),
				one(tool("echo", "bob"), ok), one(tool("echo", "bob"), rejected("user", minute)),
			},
			wantKeys: 2,
		},
		"PerToolPerUserIsolation": {
			reason: "A user's bucket for one tool is separate from the same user's bucket for another tool and from another user's.",
			cfg: &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{
				{Name: "a", PerUser: bucketOf(1, minute)}, {Name: "b", PerUser: bucketOf(1, minute)},
			}},
			steps: []step{
				one(tool("a", "alice"), ok), one(tool("a", "alice"), rejected(`tool:a:user`, minute)),
				one(tool("b", "alice"), ok), one(tool("a", "bob"), ok),
				one(tool("b", "bob"), ok), one(tool("b", "bob"), rejected(`tool:b:user`, minute)),
			},
			wantKeys: 4,
		},
		"ServerAndToolPerUserBothEnforced": {
			reason: "Server perUser 5 and tool perUser 2: the tool bucket stops the 3rd search, the server bucket the 6th call overall.",
			cfg: &v1alpha1.RateLimitConfig{
				PerUser: bucketOf(5, 5*minute),
				Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucketOf(2, minute)}},
			},
			steps: []step{
				one(tool("search", "alice"), ok), one(tool("search", "alice"), ok),
				one(tool("search", "alice"), rejected(`tool:search:user`, 30*time.Second)),
				one(tool("echo", "alice"), ok), one(tool("echo", "alice"), ok), one(tool("echo", "alice"), ok),
				one(tool("echo", "alice"), rejected("user", minute)),
				one(tool("search", "bob"), ok),
			},
			wantKeys: 4,
		},
		"PerUserRejectionNeverDrainsShared": {
			reason: "Shared 3, perUser 1: alice's rejection takes nothing from the shared bucket, so bob and carol get in and dave is the one the shared bucket stops.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(3, minute), PerUser: bucketOf(1, minute)},
			steps: []step{
				one(tool("echo", "alice"), ok),
				one(tool("echo", "alice"), outcome{RejectedBy: "user", RetryAfter: minute, Remaining: map[string]int64{"shared": 2}}),
				one(tool("echo", "bob"), ok),
				one(tool("echo", "carol"), ok),
				one(tool("echo", "dave"), outcome{RejectedBy: "shared", RetryAfter: 20 * time.Second, Remaining: map[string]int64{"shared": 0, "user": 1}}),
			},
			wantKeys: 4,
		},
		"AnonymousSkipsPerUser": {
			reason: "A request without a user id is limited by shared buckets only.",
			cfg: &v1alpha1.RateLimitConfig{
				Shared: bucketOf(10, minute), PerUser: bucketOf(1, minute),
				Tools: []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: bucketOf(1, minute)}},
			},
			steps:    []step{one(tool("a", ""), ok), one(tool("a", ""), ok), one(tool("a", ""), ok)},
			wantKeys: 1,
		},
		"UnknownToolCreatesNoKey": {
			reason: "Only configured names get a bucket: an unknown tool touches the server bucket alone.",
			cfg: &v1alpha1.RateLimitConfig{
				Shared: bucketOf(10, minute),
				Tools:  []v1alpha1.ToolRateLimitConfig{{Name: "a", Shared: bucketOf(1, minute), PerUser: bucketOf(1, minute)}},
			},
			steps:    []step{one(tool("unknown", "alice"), ok), one(tool("unknown", "alice"), ok), one(tool("A", "alice"), ok)},
			wantKeys: 1,
		},
		"UnknownToolWithOnlyToolBucketsTouchesNothing": {
			reason: "With only tool buckets configured, an unknown tool is allowed without a key.",
			cfg:    &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "a", Shared: bucketOf(1, minute)}}},
			steps:  []step{one(tool("b", "alice"), ok), one(tool("b", "alice"), ok)},
		},
		"RefillHalfPeriod": {
			reason: "Half a period after exhaustion the bucket holds half its tokens, not more.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(10, 100*time.Second)},
			steps: append(repeat(10, one(tool("echo", ""), ok)),
				one(tool("echo", ""), rejected("shared", 10*time.Second)),
				step{after: 50 * time.Second, reqs: []Request{tool("echo", "")}, want: outcome{Allowed: true, Remaining: map[string]int64{"shared": 4}}},
				one(tool("echo", ""), ok), one(tool("echo", ""), ok), one(tool("echo", ""), ok), one(tool("echo", ""), ok),
				one(tool("echo", ""), rejected("shared", 10*time.Second))),
			wantKeys: 1,
		},
		"FullRefillCapsAtCapacity": {
			reason: "However long a bucket idles, it holds at most maxTokens.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(3, minute)},
			steps: append([]step{one(tool("echo", ""), ok), {after: 10 * time.Hour, reqs: []Request{tool("echo", "")}, want: ok}},
				one(tool("echo", ""), ok), one(tool("echo", ""), ok), one(tool("echo", ""), rejected("shared", 20*time.Second))),
			wantKeys: 1,
		},
		"ExactRetryAfter": {
			reason: "Capacity 10 per 100s: empty means 10s to the next token; 4s later, 6s.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(10, 100*time.Second)},
			steps: append(repeat(10, one(tool("echo", ""), ok)),
				one(tool("echo", ""), rejected("shared", 10*time.Second)),
				step{after: 4 * time.Second, reqs: []Request{tool("echo", "")}, want: rejected("shared", 6*time.Second)}),
			wantKeys: 1,
		},
		"TwoShortBucketsLargerWait": {
			reason: "When two buckets are short, RetryAfter is the larger wait and names that bucket.",
			cfg: &v1alpha1.RateLimitConfig{
				Shared: bucketOf(2, 60*time.Second),
				Tools:  []v1alpha1.ToolRateLimitConfig{{Name: "a", Shared: bucketOf(2, 100*time.Second)}},
			},
			steps: []step{
				one(tool("a", ""), ok), one(tool("a", ""), ok),
				one(tool("a", ""), rejected(`tool:a`, 50*time.Second)),
				{after: 20 * time.Second, reqs: []Request{tool("a", "")}, want: rejected(`tool:a`, 30*time.Second)},
			},
			wantKeys: 2,
		},
		"CostAboveLevel": {
			reason: "Cost 3 against 2 tokens is rejected with the wait for the 1 missing token.",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucketOf(5, 50*time.Second)},
			steps: []step{
				one(Request{Method: MethodToolsCall, Name: "x", Cost: 3}, ok),
				one(Request{Method: MethodToolsCall, Name: "x", Cost: 3}, outcome{RejectedBy: "shared", RetryAfter: 10 * time.Second, Remaining: map[string]int64{"shared": 2}}),
				one(Request{Method: MethodToolsCall, Name: "x", Cost: 2}, ok),
			},
			wantKeys: 1,
		},
		"ConfiguredToolCost": {
			reason: "A tool's configured cost is taken from every bucket that applies, server level included.",
			cfg: &v1alpha1.RateLimitConfig{
				Shared: bucketOf(10, 100*time.Second),
				Tools:  []v1alpha1.ToolRateLimitConfig{{Name: "heavy", Shared: bucketOf(100, time.Hour), Cost: 4}},
			},
			steps: []step{
				one(tool("heavy", ""), ok), one(tool("heavy", ""), ok),
				one(tool("heavy", ""), outcome{RejectedBy: "shared", RetryAfter: 20 * time.Second, Remaining: map[string]int64{"shared": 2, `tool:heavy`: 92}}),
				one(tool("light", ""), ok),
			},
			wantKeys: 2,
		},
		"BatchAllOrNothing": {
			reason: "A batch is one decision over the union of its buckets, costs summed, admitted or rejected whole.",
			cfg: &v1alpha1.RateLimitConfig{
				Shared: bucketOf(5, 50*time.Second),
				Tools:  []v1alpha1.ToolRateLimitConfig{{Name: "a", Shared: bucketOf(10, 100*time.Second)}},
			},
			steps: []step{
				{reqs: []Request{tool("a", ""), tool("b", ""), tool("a", "")}, want: outcome{Allowed: true, Remaining: map[string]int64{"shared": 2, `tool:a`: 8}}},
				{reqs: []Request{tool("a", ""), tool("a", ""), tool("a", "")}, want: outcome{RejectedBy: "shared", RetryAfter: 10 * time.Second, Remaining: map[string]int64{"shared": 2, `tool:a`: 8}}},
				{reqs: []Request{tool("a", ""), tool("a", "")}, want: outcome{Allowed: true, Remaining: map[string]int64{"shared": 0, `tool:a`: 6}}},
			},
			wantKeys: 2,
		},
		"PromptsAndResources": {
			reason: "prompts/get and resources/read are limited by their own entries and the server buckets.",
			cfg: &v1alpha1.RateLimitConfig{
				Prompts:   []v1alpha1.PromptRateLimitConfig{{Name: "summary", Shared: bucketOf(1, minute)}},
				Resources: []v1alpha1.ResourceRateLimitConfig{{URI: "file:///etc/motd", PerUser: bucketOf(1, minute)}},
			},
			steps: []step{
				one(Request{Method: MethodPromptsGet, Name: "summary"}, ok),
				one(Request{Method: MethodPromptsGet, Name: "summary"}, rejected(`prompt:summary`, minute)),
				one(Request{Method: MethodToolsCall, Name: "summary"}, ok),
				one(Request{Method: MethodResourcesRead, Name: "file:///etc/motd", UserID: "alice"}, ok),
				one(Request{Method: MethodResourcesRead, Name: "file:///etc/motd", UserID: "alice"}, rejected(`resource:file:///etc/motd:user`, minute)),
				one(Request{Method: MethodResourcesRead, Name: "file:///etc/motd", UserID: "bob"}, ok),
				one(Request{Method: MethodResourcesRead, Name: "FILE:///etc/./%6dotd", UserID: "bob"}, rejected(`resource:file:///etc/motd:user`, minute)),
			},
			wantKeys: 3,
		},
		"HostileUserIDsStayApart": {
			reason: "User ids built to collide with other keys when written literally reach separate buckets.",
			cfg: &v1alpha1.RateLimitConfig{
				PerUser: bucketOf(1, minute),
				Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: bucketOf(1, minute)}, {Name: "a:b", PerUser: bucketOf(1, minute)}},
			},
			steps: []step{
				one(tool("a:b", "c"), ok), one(tool("a", "b:c"), ok),
				one(tool("x", "}:shared"), ok), one(tool("x", "user-tool:1:a:"), ok), one(tool("x", "\x00\n{x}"), ok),
			},
			wantKeys: 7,
		},
	}
}

// tierConfig: default users 1 call a minute and 1 web_search; pro users 3, and 2 web_search;
// staff unlimited per user; everyone shares 6.
func tierConfig() *v1alpha1.RateLimitConfig {
	return &v1alpha1.RateLimitConfig{
		Shared:  bucketOf(6, time.Minute),
		PerUser: bucketOf(1, time.Minute),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "web_search", PerUser: bucketOf(1, time.Minute)}},
		Tiers: []v1alpha1.RateLimitTier{
			{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, PerUser: bucketOf(3, time.Minute),
				Tools: []v1alpha1.TierToolLimit{{Name: "web_search", PerUser: *bucketOf(2, time.Minute)}, {Name: "fetch", PerUser: *bucketOf(1, time.Minute)}}},
			{Name: "staff", Match: v1alpha1.TierMatch{Claim: "groups", Values: []string{"sre"}}, Unlimited: true},
		},
	}
}

func tiered(name, user, tier string) Request {
	return Request{Method: MethodToolsCall, Name: name, UserID: user, Tier: tier}
}

// tierCases test tiers: each tier's buckets replace the default per-user ones, keyed apart,
// and shared buckets bind every tier alike.
func tierCases() map[string]limiterCase {
	return map[string]limiterCase{
		"TierReplacesPerUser": {
			reason: "A pro user gets the pro bucket of 3 in place of the default 1; a default user still gets 1.",
			cfg:    tierConfig(),
			steps: []step{
				one(tiered("echo", "alice", "pro"), ok), one(tiered("echo", "alice", "pro"), ok), one(tiered("echo", "alice", "pro"), ok),
				one(tiered("echo", "alice", "pro"), rejected("user@pro", 20*time.Second)),
				one(tiered("echo", "bob", ""), ok),
				one(tiered("echo", "bob", ""), rejected("user", time.Minute)),
			},
			wantKeys: 3, // shared, alice@pro, bob
		},
		"TierReplacesToolPerUser": {
			reason: "The pro tier's web_search bucket of 2 replaces the default 1; its fetch bucket limits a tool the default config does not name.",
			cfg:    tierConfig(),
			steps: []step{
				one(tiered("web_search", "alice", "pro"), outcome{Allowed: true, Remaining: map[string]int64{"tool:web_search:user@pro": 1, "user@pro": 2}}),
				one(tiered("web_search", "alice", "pro"), ok),
				one(tiered("web_search", "alice", "pro"), rejected("tool:web_search:user@pro", 30*time.Second)),
				one(tiered("fetch", "alice", "pro"), outcome{Allowed: true, Remaining: map[string]int64{"tool:fetch:user@pro": 0, "user@pro": 0}}),
				one(tiered("fetch", "alice", "pro"), rejected("tool:fetch:user@pro", time.Minute)),
				one(tiered("fetch", "bob", ""), ok),
			},
			wantKeys: 5, // shared, alice@pro, alice@pro web_search, alice@pro fetch, bob (fetch has no default bucket)
		},
		"MovingTierMeetsAnotherBucket": {
			reason: "A user moved from the default tier to pro meets the pro bucket, full, never the default one at another size; moved back, the default bucket is as it was left.",
			cfg:    tierConfig(),
			steps: []step{
				one(tiered("echo", "carol", ""), ok),
				one(tiered("echo", "carol", ""), rejected("user", time.Minute)),
				one(tiered("echo", "carol", "pro"), outcome{Allowed: true, Remaining: map[string]int64{"user@pro": 2}}),
				one(tiered("echo", "carol", ""), rejected("user", time.Minute)),
			},
			wantKeys: 3,
		},
		"UnlimitedTierStillShared": {
			reason: "The staff tier has no per-user bucket, but the shared bucket of 6 binds it: the 7th call is rejected by shared, and nothing else was charged.",
			cfg:    tierConfig(),
			steps: append(repeat(6, one(tiered("web_search", "dave", "staff"), ok)),
				one(tiered("web_search", "dave", "staff"), rejected("shared", 10*time.Second)),
				one(tiered("echo", "erin", ""), rejected("shared", 10*time.Second))),
			wantKeys: 1,
		},
		"TierBatchAllOrNothing": {
			reason: "A pro user's batch is decided on the tier's buckets as one: the second batch, short on web_search@pro, is rejected whole and charges nothing.",
			cfg:    tierConfig(),
			steps: []step{
				{reqs: []Request{tiered("web_search", "frank", "pro"), tiered("echo", "frank", "pro")}, want: outcome{Allowed: true, Remaining: map[string]int64{"user@pro": 1, "tool:web_search:user@pro": 1}}},
				{reqs: []Request{tiered("web_search", "frank", "pro"), tiered("web_search", "frank", "pro")}, want: rejected("tool:web_search:user@pro", 30*time.Second)},
				one(tiered("echo", "frank", "pro"), outcome{Allowed: true, Remaining: map[string]int64{"user@pro": 0}}),
			},
			wantKeys: 3,
		},
	}
}

func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestLimiter runs one table against miniredis and a real redis-server.
func TestLimiter(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			cases := limiterCases()
			maps.Copy(cases, tierCases())
			for name, tc := range cases {
				t.Run(name, func(t *testing.T) {
					st := be.open(t, true)
					l, err := New(st.client, "tools", "demo", tc.cfg)
					if err != nil {
						t.Fatalf("New: %v", err)
					}
					for i, s := range tc.steps {
						if s.after > 0 {
							st.advance(s.after)
						}
						d, err := l.AllowAll(t.Context(), s.reqs)
						if err != nil {
							t.Fatalf("step %d: AllowAll: %v", i, err)
						}
						got := outcomeOf(d, s.want, be.slack)
						if diff := cmp.Diff(s.want, got); diff != "" {
							t.Errorf("%s\nstep %d %+v: -want +got:\n%s", tc.reason, i, s.reqs, diff)
						}
					}
					n, err := st.client.DBSize(context.Background()).Result()
					if err != nil {
						t.Fatalf("DBSIZE: %v", err)
					}
					if n != int64(tc.wantKeys) {
						t.Errorf("%s\nkeys in Redis: want %d, got %d", tc.reason, tc.wantKeys, n)
					}
				})
			}
		})
	}
}

// outcomeOf reduces a Decision to what want checks. A real Redis's clock moves during a case,
// which can only shorten a wait: a RetryAfter within slack below the wanted one counts as it.
func outcomeOf(d Decision, want outcome, slack time.Duration) outcome {
	got := outcome{Allowed: d.Allowed, RetryAfter: d.RetryAfter}
	if d.Rejected != nil {
		got.RejectedBy = d.Rejected.String()
	}
	if got.RetryAfter <= want.RetryAfter && got.RetryAfter >= want.RetryAfter-slack {
		got.RetryAfter = want.RetryAfter
	}
	if want.Remaining != nil {
		got.Remaining = map[string]int64{}
		for _, b := range d.Buckets {
			if _, ok := want.Remaining[b.String()]; ok {
				got.Remaining[b.String()] = b.Remaining
			}
		}
	}
	return got
}

// stalled is a store that never answers: each call waits for its context.
type stalled struct{ redis.Scripter }

func (stalled) EvalSha(ctx context.Context, _ string, _ []string, _ ...interface{}) *redis.Cmd {
	<-ctx.Done()
	return redis.NewCmdResult(nil, ctx.Err())
}

// TestCallTimeout: a store that neither answers nor times out by itself is cut off after
// the call timeout, as a store failure (never an invalid request): the failure policy
// decides. The caller's context (5 s here) is not what ends it.
func TestCallTimeout(t *testing.T) {
	cases := map[string]struct {
		reason string
		opts   []Option
		atMost time.Duration
	}{
		"Default": {reason: "DefaultCallTimeout bounds a call", atMost: DefaultCallTimeout + 2*time.Second},
		"Set":     {reason: "WithCallTimeout sets the bound", opts: []Option{WithCallTimeout(20 * time.Millisecond)}, atMost: 20*time.Millisecond + 2*time.Second},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			l, err := New(stalled{}, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: bucketOf(1, time.Second)}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second) // the test's own bound
			defer cancel()
			start := time.Now()
			_, err = l.Allow(ctx, tool("x", ""))
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s: err %v, want a store failure wrapping context.DeadlineExceeded", tc.reason, err)
			}
			if took > tc.atMost {
				t.Errorf("%s: the call took %s, want at most %s", tc.reason, took, tc.atMost)
			}
		})
	}
}
