package check

import (
	"context"
	"iter"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// These tests feed the checkers doctored runs, so that each is seen to fail on exactly the
// fault it exists for (the scenario-level fixtures in simulator/testdata make them fail on
// real runs).

func bucket(n int32, d time.Duration) *v1alpha1.RateLimitBucket {
	return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: d}}
}

func call(at time.Duration, user string) traffic.Event {
	return traffic.Event{At: at, User: user, Calls: []traffic.Call{{Method: ratelimit.MethodToolsCall, Name: "s", Cost: 1}}}
}

var (
	sharedID  = ratelimit.BucketID{Scope: ratelimit.ScopeShared}
	perUserID = ratelimit.BucketID{Scope: ratelimit.ScopePerUser}
)

// rejection is a rejection by the bucket at index by (0 shared, 1 per-user) in which the
// shared bucket's level went from shared[0] to shared[1] and the per-user one's from
// user[0] to user[1] (token-µs, a period of 1 s).
func rejection(by int, shared, user [2]int64) engine.Outcome {
	o := engine.Outcome{
		Outcome: ratelimit.OutcomeRejected,
		Buckets: []ratelimit.BucketState{{BucketID: sharedID, MaxTokens: 10}, {BucketID: perUserID, MaxTokens: 1}},
		Peeks: []engine.Peek{
			{Bucket: "shared", PeriodUS: 1e6, Before: shared[0], After: shared[1]},
			{Bucket: `user of "a"`, PeriodUS: 1e6, Before: user[0], After: user[1]},
		},
	}
	o.Buckets[by].Wait = time.Second
	o.Rejected = &o.Buckets[by].BucketID
	return o
}

func TestCheckRejections(t *testing.T) {
	withExtraKey := rejection(1, [2]int64{5e6, 5e6}, [2]int64{0, 0})
	withExtraKey.Peeks = append(withExtraKey.Peeks, engine.Peek{Bucket: "k", Unsized: true, RawBefore: "1 2 3", RawAfter: "0 2 3"})
	cases := map[string]struct {
		reason string
		out    engine.Outcome
		wantOK bool
		want   string // the summary starts so
	}{
		"Unchanged": {
			reason: "every level is the same after the rejection", out: rejection(1, [2]int64{5e6, 5e6}, [2]int64{1e5, 1e5}),
			wantOK: true, want: "1 refused decision observed",
		},
		"PerUserRejectionDrainsShared": {
			reason: "a shared token gone across a per-user rejection is the seed's bug", out: rejection(1, [2]int64{5e6, 4e6}, [2]int64{0, 0}),
			want: "1 refused decision changed a bucket",
		},
		"SharedRejectionDrainsPerUser": {
			reason: "the other direction: a shared rejection that takes a per-user token (buckets consumed one by one)",
			out:    rejection(0, [2]int64{5e5, 5e5}, [2]int64{1e6, 0}), want: "1 refused decision changed a bucket",
		},
		"RejectionFillsBucket": {
			reason: "a change upwards is a change too (a rejection that refunds or resets a bucket)",
			out:    rejection(1, [2]int64{5e6, 10e6}, [2]int64{0, 0}), want: "1 refused decision changed a bucket",
		},
		"ExtraKeyChanged": {
			reason: "a key the decision's answer does not name (a faulty limiter's own script call) is compared by its stored value",
			out:    withExtraKey, want: "1 refused decision changed a bucket",
		},
		"NotObserved": {
			reason: "a rejection without peeks cannot be judged, and must not pass silently",
			out:    engine.Outcome{Outcome: ratelimit.OutcomeRejected, Buckets: rejection(1, [2]int64{}, [2]int64{}).Buckets}, want: "1 refused decision changed",
		},
		"InvalidBeforeRedis": {
			reason: "an invalid request refused before Redis had no bucket to change: nothing to judge",
			out:    engine.Outcome{Outcome: ratelimit.OutcomeInvalid, Invalid: true}, wantOK: true, want: "vacuous",
		},
		"Vacuous": {
			reason: "no rejection: say so", out: engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true},
			wantOK: true, want: "vacuous",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := CheckRejections([]traffic.Event{call(0, "a")}, []engine.Outcome{tc.out})
			if r.OK != tc.wantOK || !strings.HasPrefix(r.Summary, tc.want) {
				t.Errorf("%s\ngot OK %v %q (%v), want OK %v and a summary starting %q", tc.reason, r.OK, r.Summary, r.Violations, tc.wantOK, tc.want)
			}
		})
	}
}

func TestCheckEnvelope(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{PerUser: bucket(2, time.Second)}
	admitted := engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}
	cases := map[string]struct {
		reason string
		at     []time.Duration
		user   []string
		wantOK bool
	}{
		"Burst":           {reason: "maxTokens at once is within the envelope", at: []time.Duration{0, 0}, wantOK: true},
		"BurstPlusOne":    {reason: "one more than maxTokens in a zero window is over", at: []time.Duration{0, 0, 0}},
		"RefilledInTime":  {reason: "a token every 500 ms after the burst is the rate", at: []time.Duration{0, 0, 500 * time.Millisecond, time.Second}, wantOK: true},
		"OneMicroTooSoon": {reason: "the third token is due at 500 ms, not a µs before", at: []time.Duration{0, 0, 500*time.Millisecond - time.Microsecond}},
		"LateWindow":      {reason: "a window in the middle of the run counts too", at: []time.Duration{0, 10 * time.Second, 10 * time.Second, 10*time.Second + time.Millisecond}},
		"PerUser":         {reason: "two users' per-user buckets are judged apart", at: []time.Duration{0, 0, 0, 0}, user: []string{"a", "a", "b", "b"}, wantOK: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var events []traffic.Event
			var outs []engine.Outcome
			for i, at := range tc.at {
				u := "a"
				if tc.user != nil {
					u = tc.user[i]
				}
				events = append(events, call(at, u))
				outs = append(outs, admitted)
			}
			r := CheckEnvelope(cfg, events, outs)
			if r.OK != tc.wantOK {
				t.Errorf("%s\ngot OK %v: %s %v", tc.reason, r.OK, r.Summary, r.Violations)
			}
		})
	}
}

func TestCheckReferenceModel(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{PerUser: bucket(1, time.Second)}
	tr := traffic.FromEvents(time.Second, traffic.DefaultEpoch, []traffic.Event{call(0, "a"), call(0, "a")})
	right := []engine.Outcome{
		{Outcome: ratelimit.OutcomeAllowed, Allowed: true, Time: traffic.DefaultEpoch,
			Buckets: []ratelimit.BucketState{{BucketID: perUserID, MaxTokens: 1, RefillPeriod: time.Second, Cost: 1, Reset: time.Second}}},
		{Outcome: ratelimit.OutcomeRejected, RetryAfter: time.Second, Time: traffic.DefaultEpoch,
			Buckets: []ratelimit.BucketState{{BucketID: perUserID, MaxTokens: 1, RefillPeriod: time.Second, Cost: 1, Reset: time.Second, Wait: time.Second}}},
	}
	if r := CheckReferenceModel(cfg, tr, right); !r.OK {
		t.Errorf("the right decisions: got %s %v, want OK", r.Summary, r.Violations)
	}
	cases := map[string]func(o []engine.Outcome){
		"AdmittedTooMuch": func(o []engine.Outcome) { o[1].Allowed, o[1].Outcome = true, ratelimit.OutcomeAllowed },
		"RetryAfterOff":   func(o []engine.Outcome) { o[1].RetryAfter += time.Microsecond },
		"RemainingOff":    func(o []engine.Outcome) { o[0].Buckets[0].Remaining = 1 },
		"WrongClock":      func(o []engine.Outcome) { o[0].Time = o[0].Time.Add(time.Millisecond) },
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			outs := []engine.Outcome{right[0], right[1]}
			for i := range outs {
				outs[i].Buckets = append([]ratelimit.BucketState(nil), outs[i].Buckets...)
			}
			spoil(outs)
			if r := CheckReferenceModel(cfg, tr, outs); r.OK || r.Count != 1 {
				t.Errorf("got OK %v with %d violations (%s), want exactly one violation", r.OK, r.Count, r.Summary)
			}
		})
	}
}

// stubReplayer answers a replay of one user's calls with alone[user] for each, and a replay
// of everybody's with together.
type stubReplayer struct {
	alone    map[string]engine.Outcome
	together []engine.Outcome
}

func (r stubReplayer) Replay(_ context.Context, events iter.Seq[traffic.Event], observe engine.Observer) (*engine.Result, error) {
	all := slices.Collect(events)
	users := map[string]bool{}
	for _, e := range all {
		users[e.User] = true
	}
	for i, e := range all {
		o := r.alone[e.User]
		if len(users) > 1 {
			o = r.together[i]
		}
		observe(i, e, o)
	}
	return &engine.Result{Events: len(all)}, nil
}

func (stubReplayer) Close() {}

func TestCheckIsolation(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{PerUser: bucket(1, time.Second)}
	tr := traffic.FromEvents(time.Second, traffic.DefaultEpoch, []traffic.Event{call(0, "a"), call(0, "b")})
	allowed := engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}
	rejected := engine.Outcome{Outcome: ratelimit.OutcomeRejected, RetryAfter: time.Second}
	cases := map[string]struct {
		reason   string
		alone    map[string]engine.Outcome
		together []engine.Outcome
		wantOK   bool
		want     string // the summary starts so
	}{
		"Same": {
			reason: "each user gets alone what they got together", alone: map[string]engine.Outcome{"a": allowed, "b": allowed},
			together: []engine.Outcome{allowed, allowed}, wantOK: true, want: "2 users: the same outcome",
		},
		"Coupled": {
			reason: "b is rejected only when a is there: a shared key", alone: map[string]engine.Outcome{"a": allowed, "b": allowed},
			together: []engine.Outcome{allowed, rejected}, want: "1 outcome changed",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rp := stubReplayer{alone: tc.alone, together: tc.together}
			r, err := CheckIsolation(t.Context(), scenario.Isolation{Scope: scenario.ScopePerUser}, cfg, tr, tc.together,
				func(*v1alpha1.RateLimitConfig, ReplayOptions) (Replayer, error) { return rp, nil })
			if err != nil {
				t.Fatal(err)
			}
			if r.OK != tc.wantOK || !strings.HasPrefix(r.Summary, tc.want) {
				t.Errorf("%s\ngot OK %v: %s %v", tc.reason, r.OK, r.Summary, r.Violations)
			}
			if !tc.wantOK && (len(r.Violations) != 1 || !strings.Contains(r.Violations[0], "with everybody: rejected")) {
				t.Errorf("%s\nthe violation must describe the outcome among everybody: %v", tc.reason, r.Violations)
			}
		})
	}
}

func TestJain(t *testing.T) {
	cases := map[string]struct {
		xs   []float64
		want float64
	}{
		"Even":      {xs: []float64{5, 5, 5, 5}, want: 1},
		"OneHogs":   {xs: []float64{10, 0, 0, 0}, want: 0.25},
		"Half":      {xs: []float64{1, 1, 0, 0}, want: 0.5},
		"AllStarve": {xs: []float64{0, 0}, want: 1},
	}
	for name, tc := range cases {
		if got := jain(tc.xs); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: jain(%v) = %v, want %v", name, tc.xs, got, tc.want)
		}
	}
}

// outcomesFor admits the calls whose index is in admit.
func outcomesFor(n int, admit func(i int) bool) []engine.Outcome {
	out := make([]engine.Outcome, n)
	for i := range out {
		if admit(i) {
			out[i] = engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}
		} else {
			out[i] = engine.Outcome{Outcome: ratelimit.OutcomeRejected}
		}
	}
	return out
}

func TestCheckFairnessAndStarvation(t *testing.T) {
	// Two users call 10 times each in 10 s.
	var events []traffic.Event
	for i := range 10 {
		events = append(events, call(time.Duration(i)*time.Second, "a"), call(time.Duration(i)*time.Second, "b"))
	}
	tr := traffic.FromEvents(10*time.Second, traffic.DefaultEpoch, events)
	cases := map[string]struct {
		reason           string
		admit            func(i int) bool
		fairOK, starveOK bool
	}{
		"EvenSplit":   {reason: "every other call of each admitted: fair, nobody starved", admit: func(i int) bool { return (i/2)%2 == 0 }, fairOK: true, starveOK: true},
		"OneTakesAll": {reason: "a admitted always, b never: unfair and b starves", admit: func(i int) bool { return i%2 == 0 }},
		"LateStarve":  {reason: "b admitted only in the first half: fair enough overall (index 0.9) but starved later", admit: func(i int) bool { return i%2 == 0 || i < 10 }, fairOK: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			outs := outcomesFor(len(events), tc.admit)
			f := CheckFairness(scenario.Fairness{Min: 0.85}, tr, outs)
			if f.OK != tc.fairOK {
				t.Errorf("%s\nfairness: got OK %v: %s %v", tc.reason, f.OK, f.Summary, f.Violations)
			}
			s := CheckNoStarvation(scenario.NoStarvation{Min: 1, Window: scenario.Duration{Duration: 5 * time.Second}}, tr, outs)
			if s.OK != tc.starveOK {
				t.Errorf("%s\nnoStarvation: got OK %v: %s %v", tc.reason, s.OK, s.Summary, s.Violations)
			}
		})
	}
	// A fairness expectation that never finds two users over their share judges nothing:
	// that must not pass.
	alone := traffic.FromEvents(time.Second, traffic.DefaultEpoch, []traffic.Event{call(0, "a")})
	if r := CheckFairness(scenario.Fairness{Min: 0.9}, alone, outcomesFor(1, func(int) bool { return true })); r.OK {
		t.Errorf("nothing to judge: got OK (%s), want a failure", r.Summary)
	}
}

func TestCheckCounts(t *testing.T) {
	events := []traffic.Event{call(0, "u1"), call(0, "u1"), call(0, "u2"), {At: 0, User: "v", Calls: []traffic.Call{{Method: "tools/call", Name: "s"}, {Method: "tools/call", Name: "t"}}}}
	outs := outcomesFor(len(events), func(i int) bool { return i != 1 })
	n := func(v int64) *int64 { return &v }
	cases := map[string]struct {
		reason string
		count  scenario.Count
		wantOK bool
	}{
		"Sum":         {reason: "all calls of u-users: 3 asked, 2 admitted", count: scenario.Count{UserPrefix: "u", Requests: &scenario.Bounds{Min: n(3), Max: n(3)}, Admitted: &scenario.Bounds{Min: n(2), Max: n(2)}}, wantOK: true},
		"SumWrong":    {reason: "2 admitted is not 3", count: scenario.Count{UserPrefix: "u", Admitted: &scenario.Bounds{Min: n(3)}}},
		"EachUser":    {reason: "u1 had a rejection, u2 none", count: scenario.Count{UserPrefix: "u", EachUser: true, Rejected: &scenario.Bounds{Max: n(0)}}},
		"BatchByName": {reason: "a batch counts per call, selected by name", count: scenario.Count{Name: "t", Admitted: &scenario.Bounds{Min: n(1), Max: n(1)}}, wantOK: true},
		"NoMatch":     {reason: "eachUser over nobody is a typo, not a pass", count: scenario.Count{User: "w", EachUser: true, Admitted: &scenario.Bounds{Max: n(0)}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := CheckCounts([]scenario.Count{tc.count}, events, outs)
			if r.OK != tc.wantOK {
				t.Errorf("%s\ngot OK %v: %s %v", tc.reason, r.OK, r.Summary, r.Violations)
			}
		})
	}
}

func TestCheckRedisKeys(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	keys := engine.KeyStats{Peak: 10, Final: 2, Expired: 30}
	if r := CheckRedisKeys(scenario.RedisKeys{Peak: &scenario.Bounds{Max: n(10)}, Expired: &scenario.Bounds{Min: n(30)}}, keys, 40); !r.OK {
		t.Errorf("within bounds: got %s %v", r.Summary, r.Violations)
	}
	r := CheckRedisKeys(scenario.RedisKeys{Peak: &scenario.Bounds{Max: n(9)}}, keys, 40)
	if diff := cmp.Diff([]string{"peak keys 10, want <= 9"}, r.Violations); r.OK || diff != "" {
		t.Errorf("peak above max: got OK %v, violations -want +got:\n%s", r.OK, diff)
	}
}

// TestVacuousSummaries shows every property that holds with nothing to judge saying so:
// a pass over nothing is not a pass.
func TestVacuousSummaries(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{PerUser: bucket(1, time.Second)}
	empty := traffic.FromEvents(time.Second, traffic.DefaultEpoch, []traffic.Event{})
	zero := int64(0)
	noReplay := func(*v1alpha1.RateLimitConfig, ReplayOptions) (Replayer, error) { return stubReplayer{}, nil }
	iso, err := CheckIsolation(t.Context(), scenario.Isolation{Scope: scenario.ScopePerUser}, cfg, empty, nil, noReplay)
	if err != nil {
		t.Fatal(err)
	}
	unlimited := []traffic.Event{{User: "a", Calls: []traffic.Call{{Method: ratelimit.MethodToolsCall, Name: "s", Cost: 1}}}}
	cases := map[string]struct {
		reason string
		got    Result
	}{
		"Rejections":     {reason: "no refused decision", got: CheckRejections(nil, nil)},
		"Envelope":       {reason: "no admitted call", got: CheckEnvelope(cfg, nil, nil)},
		"ReferenceModel": {reason: "an empty trace: no decision", got: CheckReferenceModel(cfg, empty, nil)},
		"ReferenceModelNoBucket": {
			reason: "calls that meet no bucket never run the script",
			got:    CheckReferenceModel(nil, traffic.FromEvents(time.Second, traffic.DefaultEpoch, unlimited), []engine.Outcome{{Outcome: ratelimit.OutcomeAllowed, Allowed: true}}),
		},
		"Isolation":    {reason: "no identified user", got: iso},
		"NoStarvation": {reason: "nobody asked", got: CheckNoStarvation(scenario.NoStarvation{Min: 1, Window: scenario.Duration{Duration: time.Second}}, empty, nil)},
		"Counts":       {reason: "no call matched", got: CheckCounts([]scenario.Count{{User: "a", Rejected: &scenario.Bounds{Max: &zero}}}, nil, nil)},
		"RedisKeys":    {reason: "no script call", got: CheckRedisKeys(scenario.RedisKeys{Peak: &scenario.Bounds{Max: &zero}}, engine.KeyStats{}, 0)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !tc.got.OK || !tc.got.Vacuous || !strings.HasPrefix(tc.got.Summary, "vacuous: ") {
				t.Errorf("%s: got OK %v, vacuous %v, summary %q; want a vacuous pass that says so", tc.reason, tc.got.OK, tc.got.Vacuous, tc.got.Summary)
			}
		})
	}
}

// TestCheckCountsSummary checks that the summary counts tallies (entries, or users of an
// eachUser entry), not broken bounds, and names entries that matched nothing.
func TestCheckCountsSummary(t *testing.T) {
	events := []traffic.Event{call(0, "u1"), call(0, "u1"), call(0, "u2")}
	outs := outcomesFor(len(events), func(i int) bool { return i != 1 })
	n := func(v int64) *scenario.Bounds { return &scenario.Bounds{Min: &v, Max: &v} }
	cases := map[string]struct {
		reason string
		counts []scenario.Count
		want   string
	}{
		"TwoBoundsOneCount": {
			reason: "one entry with two broken bounds is one count out of bounds (two violations)",
			counts: []scenario.Count{{User: "u1", Admitted: n(2), Rejected: n(0)}, {User: "u2", Admitted: n(1)}},
			want:   "1 of 2 counts out of bounds",
		},
		"EachUser": {
			reason: "an eachUser entry is one count per user",
			counts: []scenario.Count{{UserPrefix: "u", EachUser: true, Rejected: n(0)}},
			want:   "1 of 2 counts out of bounds",
		},
		"SomeVacuous": {
			reason: "an entry that matched no call is named",
			counts: []scenario.Count{{User: "u2", Admitted: n(1)}, {Name: "other", Rejected: n(0)}},
			want:   "all 2 counts within bounds; vacuous for counts[1] (no call matched)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := CheckCounts(tc.counts, events, outs).Summary; got != tc.want {
				t.Errorf("%s\nsummary: got %q, want %q", tc.reason, got, tc.want)
			}
		})
	}
}

func TestCheckTierEnvelope(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{
		PerUser: bucket(2, time.Second),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucket(1, time.Second)}},
		Tiers: []v1alpha1.RateLimitTier{
			{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, PerUser: bucket(5, time.Second),
				Tools: []v1alpha1.TierToolLimit{{Name: "search", PerUser: *bucket(3, time.Second)}}},
			{Name: "staff", Match: v1alpha1.TierMatch{Header: "X-Staff", Values: []string{"yes"}}, Unlimited: true},
		},
	}
	id := func(kind, name, tier string) ratelimit.BucketState {
		return ratelimit.BucketState{BucketID: ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: kind, Name: name, Tier: tier}}
	}
	tiered := func(at time.Duration, user, tier, tool string) traffic.Event {
		return traffic.Event{At: at, User: user, Tier: tier, Calls: []traffic.Call{{Method: ratelimit.MethodToolsCall, Name: tool, Cost: 1}}}
	}
	admitted := func(buckets ...ratelimit.BucketState) engine.Outcome {
		return engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true, Buckets: buckets}
	}
	cases := map[string]struct {
		reason string
		events []traffic.Event
		outs   []engine.Outcome
		wantOK bool
		want   string // a violation (or, when OK, the summary) contains it
	}{
		"ProWithinItsEnvelope": {
			reason: "five calls at once fit the pro tier's 5 per second, above the default 2",
			events: repeat(5, tiered(0, "pat", "pro", "x")), outs: repeat(5, admitted(id("", "", "pro"))),
			wantOK: true, want: "(pro 5 of 5 admitted); no call in staff",
		},
		"ProAboveItsEnvelope": {
			reason: "a sixth call at once is above the pro tier's envelope",
			events: repeat(6, tiered(0, "pat", "pro", "x")), outs: repeat(6, admitted(id("", "", "pro"))),
			want: `user@pro of "pat" admitted 6 tokens`,
		},
		"ProHeldToTheDefaultBucket": {
			reason: "a limiter that ignores the tier holds a pro user to the default bucket, even while it admits",
			events: []traffic.Event{tiered(0, "pat", "pro", "x")}, outs: []engine.Outcome{admitted(id("", "", ""))},
			want: `held to the default user bucket, which tier "pro" replaces`,
		},
		"ProHeldToTheDefaultToolBucket": {
			reason: "the tier's tool bucket replaces the tool's default per-user bucket",
			events: []traffic.Event{tiered(0, "pat", "pro", "search")}, outs: []engine.Outcome{admitted(id("", "", "pro"), id("tool", "search", ""))},
			want: `held to the default tool:search:user bucket, which tier "pro" replaces with its own for the tool`,
		},
		"UnlimitedHeldToADefaultBucket": {
			reason: "an unlimited tier's users meet no per-user bucket at all",
			events: []traffic.Event{tiered(0, "sam", "staff", "x")}, outs: []engine.Outcome{admitted(id("", "", ""))},
			want: `tier "staff" is unlimited`,
		},
		"DefaultUserInATierBucket": {
			reason: "no more: a user in no tier never gets a tier's buckets",
			events: []traffic.Event{tiered(0, "ann", "", "x"), tiered(0, "sam", "staff", "x")},
			outs:   []engine.Outcome{admitted(id("", "", "pro")), admitted()},
			want:   `user "ann" (no tier) tools/call x: held to user@pro, a bucket of another tier`,
		},
		"NoTieredUser": {
			reason: "tiers that nobody was in were never tested (a typo in a claim): that fails rather than passes",
			events: []traffic.Event{tiered(0, "ann", "", "x")}, outs: []engine.Outcome{admitted(id("", "", ""))},
			want: "no call was made in any tier",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := CheckTierEnvelope(cfg, tc.events, tc.outs)
			text := r.Summary + "\n" + strings.Join(r.Violations, "\n")
			if r.OK != tc.wantOK || !strings.Contains(text, tc.want) {
				t.Errorf("%s\ngot OK %v: %s, want OK %v with %q", tc.reason, r.OK, text, tc.wantOK, tc.want)
			}
		})
	}
}

// repeat is n copies of v.
func repeat[T any](n int, v T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// degraded admits n calls of user at each of the times in µs: the local buckets' admissions.
func degraded(user string, times ...time.Duration) ([]traffic.Event, []engine.Outcome) {
	var evs []traffic.Event
	var outs []engine.Outcome
	for _, at := range times {
		evs = append(evs, call(at, user))
		outs = append(outs, engine.Outcome{Outcome: ratelimit.OutcomeDegradedAllowed, Allowed: true, Degraded: true})
	}
	return evs, outs
}

// burstAt is n instants at t.
func burstAt(t time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = t
	}
	return out
}

// TestCheckOutageEnvelope: the bound of docs/proxy.md, C + r·D between the replicas for a
// shared bucket (C at least one token a replica), replicas × (C + r·D) for a per-user bucket
// not divided, C + r·D for one divided.
func TestCheckOutageEnvelope(t *testing.T) {
	outage := []engine.Outage{{From: 0, To: 10 * time.Second}}
	cases := map[string]struct {
		reason   string
		cfg      *v1alpha1.RateLimitConfig
		replicas int
		times    []time.Duration
		wantOK   bool
		want     string // the summary starts so
	}{
		"SharedWithin": {
			reason: "10 at once fit a shared bucket of 10, whatever the replicas",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(10, time.Second)}, replicas: 2, times: burstAt(0, 10),
			wantOK: true, want: "10 calls admitted by the local buckets",
		},
		"SharedAbove": {
			reason: "11 at once do not: undivided local buckets would admit 20",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(10, time.Second)}, replicas: 2, times: burstAt(0, 11),
			want: "1 window above the local buckets' bound",
		},
		"SharedOneTokenEach": {
			reason: "a shared bucket of 1 divided among 3 replicas keeps a token on each: 3",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(1, time.Second)}, replicas: 3, times: burstAt(0, 3),
			wantOK: true, want: "3 calls",
		},
		"SharedRefill": {
			reason: "r·D: 10 at once, then 10 more a second later",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(10, time.Second)}, replicas: 2, times: append(burstAt(0, 10), burstAt(time.Second, 10)...),
			wantOK: true, want: "20 calls",
		},
		"PerUserNotDivided": {
			reason: "a per-user bucket of 3 on each of 2 replicas: 6 at once",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(3, time.Second)}, replicas: 2, times: burstAt(0, 6),
			wantOK: true, want: "6 calls",
		},
		"PerUserNotDividedAbove": {
			reason: "7 is more than the replicas' per-user buckets hold",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(3, time.Second)}, replicas: 2, times: burstAt(0, 7),
			want: "1 window above",
		},
		"PerUserDivided": {
			reason: "with local.dividePerUser the per-user bucket is divided like a shared one: 4 is above 3",
			cfg:    &v1alpha1.RateLimitConfig{PerUser: bucket(3, time.Second), Local: &v1alpha1.LocalFailurePolicy{DividePerUser: true}}, replicas: 2, times: burstAt(0, 4),
			want: "1 window above",
		},
		"Vacuous": {
			reason: "no local admission: nothing to judge, and it says so",
			cfg:    &v1alpha1.RateLimitConfig{Shared: bucket(10, time.Second)}, replicas: 2,
			wantOK: true, want: "vacuous: no call was admitted by the local buckets during 10s of outage",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			evs, outs := degraded("a", tc.times...)
			r := CheckOutageEnvelope(tc.cfg, tc.replicas, outage, evs, outs)
			if r.OK != tc.wantOK || !strings.HasPrefix(r.Summary, tc.want) {
				t.Errorf("%s\ngot OK %v: %s %v", tc.reason, r.OK, r.Summary, r.Violations)
			}
		})
	}
}

// TestEnvelopeFailOpen: what failurePolicy Allow lets through is no violation of the
// envelope, but its excess is reported; local buckets' admissions are outageEnvelope's.
func TestEnvelopeFailOpen(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{Shared: bucket(2, time.Second)}
	allowed := engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}
	failOpen := engine.Outcome{Outcome: ratelimit.OutcomeFailOpen}
	local := engine.Outcome{Outcome: ratelimit.OutcomeDegradedAllowed, Allowed: true, Degraded: true}
	evs := []traffic.Event{call(0, "a"), call(0, "a"), call(0, "a"), call(0, "a"), call(0, "a")}
	cases := map[string]struct {
		reason string
		outs   []engine.Outcome
		wantOK bool
		want   string
	}{
		"FailOpenExcess": {
			reason: "2 allowed by Redis, 3 let through at the same instant: 3 tokens above the envelope, reported",
			outs:   []engine.Outcome{allowed, allowed, failOpen, failOpen, failOpen}, wantOK: true,
			want: "2 calls admitted through buckets; each bucket (every shared one, every user's per-user ones) within maxTokens + rate × window for every window; " +
				"3 calls let through while Redis was down (fail_open) not judged: the excess failurePolicy Allow admits, tokens above the envelope: shared 3",
		},
		"FailOpenWithin": {
			reason: "1 allowed, 1 let through: within the envelope",
			outs:   []engine.Outcome{allowed, failOpen}, wantOK: true,
			want: "1 call admitted through buckets; each bucket (every shared one, every user's per-user ones) within maxTokens + rate × window for every window; " +
				"1 call let through while Redis was down (fail_open) not judged: the excess failurePolicy Allow admits, none above the envelope",
		},
		"LocalNotJudged": {
			reason: "the local buckets' admissions are outageEnvelope's to judge",
			outs:   []engine.Outcome{allowed, allowed, local, local, local}, wantOK: true,
			want: "2 calls admitted through buckets; each bucket (every shared one, every user's per-user ones) within maxTokens + rate × window for every window",
		},
		"RedisAbove": {
			reason: "Redis's own admissions above the envelope are still a violation",
			outs:   []engine.Outcome{allowed, allowed, allowed}, want: "1 window above a bucket's envelope",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := CheckEnvelope(cfg, evs[:len(tc.outs)], tc.outs)
			if r.OK != tc.wantOK {
				t.Errorf("%s\ngot OK %v: %v", tc.reason, r.OK, r.Violations)
			}
			if diff := cmp.Diff(tc.want, r.Summary); diff != "" {
				t.Errorf("%s\nsummary: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
