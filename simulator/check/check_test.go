package check

import (
	"context"
	"math"
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

// perUserRejection is a rejection by the per-user bucket with the shared bucket's level
// going from before to after.
func perUserRejection(before, after int64) engine.Outcome {
	return engine.Outcome{
		Outcome: ratelimit.OutcomeRejected,
		Buckets: []ratelimit.BucketState{{BucketID: sharedID, MaxTokens: 10}, {BucketID: perUserID, MaxTokens: 1, Wait: time.Second}},
		Peeks:   []engine.Peek{{PeriodUS: 1e6, Before: before, After: after}, {PeriodUS: 1e6}},
	}
}

func TestCheckNoDrain(t *testing.T) {
	cases := map[string]struct {
		reason string
		out    engine.Outcome
		wantOK bool
		want   string // the summary starts so
	}{
		"Unchanged":   {reason: "the shared level is the same after the rejection", out: perUserRejection(5e6, 5e6), wantOK: true, want: "1 per-user rejection observed"},
		"Drained":     {reason: "a shared token gone across a per-user rejection is the seed's bug", out: perUserRejection(5e6, 4e6), want: "1 per-user rejection drained a shared bucket"},
		"NotObserved": {reason: "a rejection without peeks cannot be judged, and must not pass silently", out: engine.Outcome{Outcome: ratelimit.OutcomeRejected, Buckets: perUserRejection(0, 0).Buckets}, want: "1 per-user rejection drained"},
		"Vacuous":     {reason: "no per-user rejection: say so", out: engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}, wantOK: true, want: "vacuous"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := CheckNoDrain([]traffic.Event{call(0, "a")}, []engine.Outcome{tc.out})
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
	tr := &traffic.Traffic{Events: []traffic.Event{call(0, "a"), call(0, "a")}, Epoch: traffic.DefaultEpoch}
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

func TestCheckIsolation(t *testing.T) {
	cfg := &v1alpha1.RateLimitConfig{PerUser: bucket(1, time.Second)}
	events := []traffic.Event{call(0, "a"), call(0, "b")}
	allowed := engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}
	rejected := engine.Outcome{Outcome: ratelimit.OutcomeRejected, RetryAfter: time.Second}
	// rerun answers "alone" with alone[user] and "together" with together.
	rerun := func(alone map[string]engine.Outcome, together []engine.Outcome) Rerun {
		return func(_ context.Context, _ *v1alpha1.RateLimitConfig, groups [][]traffic.Event) ([]*engine.Result, error) {
			var out []*engine.Result
			for _, g := range groups {
				r := &engine.Result{}
				if len(g) == len(events) {
					r.Outcomes = together
				} else {
					for _, e := range g {
						r.Outcomes = append(r.Outcomes, alone[e.User])
					}
				}
				out = append(out, r)
			}
			return out, nil
		}
	}
	cases := map[string]struct {
		reason   string
		alone    map[string]engine.Outcome
		together []engine.Outcome
		wantOK   bool
	}{
		"Same":    {reason: "each user gets alone what they got together", alone: map[string]engine.Outcome{"a": allowed, "b": allowed}, together: []engine.Outcome{allowed, allowed}, wantOK: true},
		"Coupled": {reason: "b is rejected only when a is there: a shared key", alone: map[string]engine.Outcome{"a": allowed, "b": allowed}, together: []engine.Outcome{allowed, rejected}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := CheckIsolation(t.Context(), scenario.Isolation{Scope: scenario.ScopePerUser}, cfg, events, nil, rerun(tc.alone, tc.together))
			if err != nil {
				t.Fatal(err)
			}
			if r.OK != tc.wantOK {
				t.Errorf("%s\ngot OK %v: %s %v", tc.reason, r.OK, r.Summary, r.Violations)
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
	tr := &traffic.Traffic{Events: events, Duration: 10 * time.Second}
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
	alone := &traffic.Traffic{Events: []traffic.Event{call(0, "a")}, Duration: time.Second}
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
	if r := CheckRedisKeys(scenario.RedisKeys{Peak: &scenario.Bounds{Max: n(10)}, Expired: &scenario.Bounds{Min: n(30)}}, keys); !r.OK {
		t.Errorf("within bounds: got %s %v", r.Summary, r.Violations)
	}
	r := CheckRedisKeys(scenario.RedisKeys{Peak: &scenario.Bounds{Max: n(9)}}, keys)
	if diff := cmp.Diff([]string{"peak keys 10, want <= 9"}, r.Violations); r.OK || diff != "" {
		t.Errorf("peak above max: got OK %v, violations -want +got:\n%s", r.OK, diff)
	}
}
