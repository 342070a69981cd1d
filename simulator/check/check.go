// Package check judges a run against the properties a scenario expects. Each property is a
// small function over the run's events and outcomes that returns a Result; each one has a
// test that makes it fail, because a checker that cannot fail proves nothing.
package check

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Property names, as written under expect: in a scenario.
const (
	NoDrain        = "perUserRejectionNeverDrainsShared"
	Envelope       = "tokenBucketEnvelope"
	ReferenceModel = "referenceModel"
	Isolation      = "isolation"
	Fairness       = "fairness"
	NoStarvation   = "noStarvation"
	Counts         = "counts"
	RedisKeys      = "redisKeys"
)

// maxViolations is how many violations a Result spells out; the rest are counted.
const maxViolations = 5

// Result is one property's verdict.
type Result struct {
	Name       string   `json:"name"`
	OK         bool     `json:"ok"`
	Summary    string   `json:"summary"`
	Violations []string `json:"violations,omitempty"` // the first few
	Count      int      `json:"violationCount,omitempty"`
	// NotApplicable: the run could not judge the property (--engine model has no Redis);
	// OK is true, and Summary says why.
	NotApplicable bool `json:"notApplicable,omitempty"`
}

func (r *Result) violate(format string, args ...any) {
	r.OK = false
	r.Count++
	if len(r.Violations) < maxViolations {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

// Rerun replays events under cfg (isolation needs runs without the other users); groups
// are replayed each on its own, from empty Redis.
type Rerun func(ctx context.Context, cfg *v1alpha1.RateLimitConfig, groups [][]traffic.Event) ([]*engine.Result, error)

// Input is a finished run.
type Input struct {
	Scenario *scenario.Scenario
	Traffic  *traffic.Traffic
	Result   *engine.Result
	Rerun    Rerun
	// Model is a run decided by the reference model (--engine model): the properties that
	// need Redis, or compare the limiter with the model, are reported as not applicable.
	Model bool
}

// notApplicable is a property that a run decided by the model cannot judge.
func notApplicable(name, why string) Result {
	return Result{Name: name, OK: true, NotApplicable: true, Summary: "not applicable with --engine model: " + why}
}

// All checks every property the scenario expects, in a fixed order.
func All(ctx context.Context, in Input) ([]Result, error) {
	e := in.Scenario.Expect
	cfg := in.Scenario.RateLimiting
	var out []Result
	switch {
	case scenario.On(e.PerUserRejectionNeverDrainsShared) && in.Model:
		out = append(out, notApplicable(NoDrain, "it is judged from bucket levels observed in Redis, and the model "+
			"never takes a token on a rejection by construction (run with --engine redis to observe it)"))
	case scenario.On(e.PerUserRejectionNeverDrainsShared):
		out = append(out, CheckNoDrain(in.Traffic.Events, in.Result.Outcomes))
	}
	if scenario.On(e.TokenBucketEnvelope) {
		out = append(out, CheckEnvelope(cfg, in.Traffic.Events, in.Result.Outcomes))
	}
	switch {
	case scenario.On(e.ReferenceModel) && in.Model:
		out = append(out, notApplicable(ReferenceModel, "the model made the decisions, so there is no limiter to compare it with"))
	case scenario.On(e.ReferenceModel):
		out = append(out, CheckReferenceModel(cfg, in.Traffic, in.Result.Outcomes))
	}
	if e.Isolation != nil {
		r, err := CheckIsolation(ctx, *e.Isolation, cfg, in.Traffic.Events, in.Result.Outcomes, in.Rerun)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if e.Fairness != nil {
		out = append(out, CheckFairness(*e.Fairness, in.Traffic, in.Result.Outcomes))
	}
	if e.NoStarvation != nil {
		out = append(out, CheckNoStarvation(*e.NoStarvation, in.Traffic, in.Result.Outcomes))
	}
	if len(e.Counts) > 0 {
		out = append(out, CheckCounts(e.Counts, in.Traffic.Events, in.Result.Outcomes))
	}
	switch {
	case e.RedisKeys != nil && in.Model:
		out = append(out, notApplicable(RedisKeys, "there is no Redis, so no keys to count"))
	case e.RedisKeys != nil:
		out = append(out, CheckRedisKeys(*e.RedisKeys, in.Result.Keys))
	}
	return out, nil
}

// at formats a virtual time offset for messages: +1m2.5s.
func at(d time.Duration) string { return "+" + d.String() }

// who names a caller in messages.
func who(user string) string {
	if user == "" {
		return "anonymous"
	}
	return fmt.Sprintf("user %q", user)
}

// callName names an event's call(s) in messages.
func callName(e traffic.Event) string {
	if len(e.Calls) == 0 {
		return "(no call)"
	}
	s := e.Calls[0].Method + " " + e.Calls[0].Name
	if len(e.Calls) > 1 {
		s += fmt.Sprintf(" (batch of %d)", len(e.Calls))
	}
	return s
}

// identifiedUsers lists the users with calls, in order of first call.
func identifiedUsers(events []traffic.Event) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range events {
		if e.User != "" && !seen[e.User] {
			seen[e.User] = true
			out = append(out, e.User)
		}
	}
	return out
}

// plural writes n and the noun, with an s when n is not 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
