package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

func bucket(n int32, d time.Duration) *v1alpha1.RateLimitBucket {
	return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: d}}
}

func ev(at time.Duration, user, tool string, cost int32) traffic.Event {
	return traffic.Event{At: at, User: user, Calls: []traffic.Call{{Method: ratelimit.MethodToolsCall, Name: tool, Cost: cost}}}
}

func TestRunOutcomes(t *testing.T) {
	cases := map[string]struct {
		reason string
		cfg    *v1alpha1.RateLimitConfig
		events []traffic.Event
		want   []ratelimit.Outcome
	}{
		"EnforceRefillAndInvalid": {
			reason: "virtual time refills the bucket; a cost above capacity is invalid",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(2, time.Second)},
			events: []traffic.Event{ev(0, "a", "s", 2), ev(0, "a", "s", 1), ev(500*time.Millisecond, "a", "s", 1), ev(0, "a", "s", 3)},
			want:   []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeRejected, ratelimit.OutcomeAllowed, ratelimit.OutcomeInvalid},
		},
		"Shadow": {
			reason: "shadow mode lets a would-be rejection (and an invalid call) pass, named as such",
			cfg:    &v1alpha1.RateLimitConfig{Mode: v1alpha1.RateLimitModeShadow, PerUser: bucket(1, time.Second)},
			events: []traffic.Event{ev(0, "a", "s", 1), ev(0, "a", "s", 1), ev(0, "a", "s", 2)},
			want:   []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeShadowRejected, ratelimit.OutcomeShadowRejected},
		},
		"Unidentified": {
			reason: "an anonymous call a per-user bucket applies to is refused without a decision",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(1, time.Second)},
			events: []traffic.Event{ev(0, "", "s", 1)},
			want:   []ratelimit.Outcome{ratelimit.OutcomeUnidentified},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// Events need not be sorted for Run; these go back in time only for the invalid
			// call, which never reaches Redis.
			res, err := Run(t.Context(), Options{Namespace: "default", Name: "x", Config: tc.cfg}, tc.events)
			if err != nil {
				t.Fatal(err)
			}
			var got []ratelimit.Outcome
			for _, o := range res.Outcomes {
				got = append(got, o.Outcome)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestRunVirtualClock checks that the limiter sees Redis TIME at each call's virtual instant,
// and that calls are dealt to the replicas in turn.
func TestRunVirtualClock(t *testing.T) {
	epoch := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	cfg := &v1alpha1.RateLimitConfig{Shared: bucket(100, time.Second)}
	events := []traffic.Event{ev(0, "a", "s", 1), ev(1234567*time.Microsecond, "b", "s", 1), ev(48*time.Hour, "a", "s", 1)}
	res, err := Run(t.Context(), Options{Namespace: "default", Name: "x", Config: cfg, Replicas: 2, Epoch: epoch}, events)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range res.Outcomes {
		got = append(got, o.Time.UTC().Format(time.RFC3339Nano)+" replica "+string(rune('0'+o.Replica)))
	}
	want := []string{"2030-05-06T07:08:09Z replica 0", "2030-05-06T07:08:10.234567Z replica 1", "2030-05-08T07:08:09Z replica 0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
	if res.ScriptCalls != 3 {
		t.Errorf("script calls: got %d, want 3", res.ScriptCalls)
	}
}

// TestExpiryIsExact shows keys leave Redis exactly when their TTL runs out in virtual time,
// not a step early: the per-user key of a 1-token-per-second bucket lives 1001 ms after a
// call (time to full, rounded up to the ms, plus one).
func TestExpiryIsExact(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{PerUser: bucket(1, time.Second)}
	cases := map[string]struct {
		reason string
		second time.Duration
		want   KeyStats
	}{
		"JustBefore": {reason: "1 µs before the TTL both keys are alive", second: 1001*time.Millisecond - time.Microsecond, want: KeyStats{Peak: 2, Final: 2}},
		"AtTTL":      {reason: "at the TTL the first key is gone before the second call", second: 1001 * time.Millisecond, want: KeyStats{Peak: 1, Final: 1, Expired: 1}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := Run(t.Context(), Options{Namespace: "default", Name: "x", Config: cfg}, []traffic.Event{ev(0, "a", "s", 1), ev(tc.second, "b", "s", 1)})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, res.Keys); diff != "" {
				t.Errorf("%s\nkeys: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestObserve checks the peeks around a per-user rejection: both levels of each bucket, at
// the same instant, the per-user one empty and the shared one untouched.
func TestObserve(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{Shared: bucket(10, time.Second), PerUser: bucket(1, time.Second)}
	events := []traffic.Event{ev(0, "a", "s", 1), ev(100*time.Millisecond, "a", "s", 1)}
	res, err := Run(t.Context(), Options{Namespace: "default", Name: "x", Config: cfg, Observe: true}, events)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcomes[0].Peeks != nil {
		t.Errorf("admitted call: got peeks %+v, want none (only rejections are judged)", res.Outcomes[0].Peeks)
	}
	var got [][2]int64
	for _, p := range res.Outcomes[1].Peeks {
		got = append(got, [2]int64{p.Before, p.After})
	}
	// Token-µs: shared 9 tokens + 100 ms × 10/s refill = 10 tokens (full, capped);
	// per-user 0 + 100 ms × 1/s = 0.1 token.
	want := [][2]int64{{10_000_000, 10_000_000}, {100_000, 100_000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("levels around the rejection (shared, perUser): -want +got:\n%s", diff)
	}
}

// TestExpiryOfWritesOnRejection checks that the keys a script writes are expired whatever
// the decision: a script that consumes buckets one by one writes user b's bucket on b's
// shared rejection, and that key is counted and expired like any other. shared: 1 token a
// second (a key of 1001 ms after a's call); per-user: 5 a second (201 ms after one token).
func TestExpiryOfWritesOnRejection(t *testing.T) {
	oneByOne := strings.Replace(ratelimit.ScriptSource(),
		"if out[1] == 1 then\n  for i = 1, #KEYS do\n    local max, period, cost = read(FORMAT, args, SIZE * i - SIZE + 1)\n",
		"for i = 1, #KEYS do\n  local max, period, cost = read(FORMAT, args, SIZE * i - SIZE + 1)\n  if out[i + 2] >= cost * period then\n", 1)
	if oneByOne == ratelimit.ScriptSource() {
		t.Fatal("the mutation no longer applies to the script: update it")
	}
	cfg := &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Second), PerUser: bucket(5, time.Second)}
	events := []traffic.Event{ev(0, "a", "s", 1), ev(0, "b", "s", 1), ev(1100*time.Millisecond, "c", "s", 1)}
	cases := map[string]struct {
		reason string
		script string
		want   KeyStats
	}{
		"Real": {
			reason: "b's rejection writes nothing: shared and a's key, then both expired and c's two written",
			script: ratelimit.ScriptSource(), want: KeyStats{Peak: 2, Final: 2, Expired: 2},
		},
		"OneByOne": {
			reason: "b's rejection writes b's per-user key: three alive, three expired",
			script: oneByOne, want: KeyStats{Peak: 3, Final: 2, Expired: 3},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			opts := Options{Namespace: "default", Name: "x", Config: cfg, NewLimiter: func(c redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (Decider, error) {
				return ratelimit.New(c, ns, name, cfg, append(opts, ratelimit.WithScript(tc.script))...)
			}}
			res, err := Run(t.Context(), opts, events)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, res.Keys); diff != "" {
				t.Errorf("%s\nkeys: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestOutages: while Redis is down every script call fails and the failure policy answers,
// as the proxy's does; both engines agree. Redis is down in [1s, 2s); the shared bucket
// holds 1 token a 10 s, taken at +0 s, so +3 s is refused by Redis again (0.3 token). A
// deny cache refuses what it knows even then; a call no bucket applies to never asks Redis.
func TestOutages(t *testing.T) {
	cfg := func(p v1alpha1.FailurePolicy) *v1alpha1.RateLimitConfig {
		return &v1alpha1.RateLimitConfig{Shared: bucket(1, 10*time.Second), FailurePolicy: p,
			Tools: []v1alpha1.ToolRateLimitConfig{{Name: "slow", PerUser: bucket(1, time.Hour)}}}
	}
	outages := []Outage{{From: time.Second, To: 2 * time.Second}}
	events := []traffic.Event{ev(0, "a", "s", 1), ev(time.Second, "a", "s", 1), ev(1500*time.Millisecond, "a", "s", 1), ev(3*time.Second, "a", "s", 1)}
	cases := map[string]struct {
		reason   string
		cfg      *v1alpha1.RateLimitConfig
		events   []traffic.Event
		replicas int
		want     []ratelimit.Outcome
		modelToo bool
	}{
		"Allow": {
			reason: "Allow lets the outage's calls through", cfg: cfg(""), events: events, modelToo: true,
			want: []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeFailOpen, ratelimit.OutcomeFailOpen, ratelimit.OutcomeRejected},
		},
		"Deny": {
			reason: "Deny refuses them", cfg: cfg(v1alpha1.FailurePolicyDeny), events: events, modelToo: true,
			want: []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeFailClosed, ratelimit.OutcomeFailClosed, ratelimit.OutcomeRejected},
		},
		"Local": {
			reason: "Local's local bucket, full at the outage, admits one and refuses the next; Redis's bucket never saw them",
			cfg:    cfg(v1alpha1.FailurePolicyLocal), events: events, modelToo: true,
			want: []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeDegradedAllowed, ratelimit.OutcomeDegradedRejected, ratelimit.OutcomeRejected},
		},
		"LocalDivided": {
			reason: "with 2 replicas the shared bucket of 1 keeps a token on each: both outage calls admitted, one per replica",
			cfg:    cfg(v1alpha1.FailurePolicyLocal), events: events, replicas: 2, modelToo: true,
			want: []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeDegradedAllowed, ratelimit.OutcomeDegradedAllowed, ratelimit.OutcomeRejected},
		},
		"DenyCacheStillRefuses": {
			reason: "Redis refused slow at +0.5 s (an hour to wait): during the outage the cache refuses it again (429), not the policy",
			cfg:    cfg(v1alpha1.FailurePolicyDeny),
			events: []traffic.Event{ev(0, "b", "slow", 1), ev(500*time.Millisecond, "b", "slow", 1), ev(time.Second, "b", "slow", 1)},
			want:   []ratelimit.Outcome{ratelimit.OutcomeAllowed, ratelimit.OutcomeRejected, ratelimit.OutcomeRejected},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, model := range []bool{false, true} {
				if model && !tc.modelToo {
					continue
				}
				res, err := Run(t.Context(), Options{Namespace: "default", Name: "x", Config: tc.cfg, Replicas: tc.replicas, Outages: outages, Model: model}, tc.events)
				if err != nil {
					t.Fatal(err)
				}
				var got []ratelimit.Outcome
				for _, o := range res.Outcomes {
					got = append(got, o.Outcome)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("%s (model engine %v)\n-want +got:\n%s", tc.reason, model, diff)
				}
			}
		})
	}
}
