// Package check judges a run against the properties a scenario expects. Each property is a
// small function over the run's events and outcomes that returns a Result; each one has a
// test that makes it fail, because a checker that cannot fail proves nothing.
package check

import (
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Property names, as written under expect: in a scenario.
const (
	RejectionChangesNoBucket = "rejectionChangesNoBucket"
	Envelope                 = "tokenBucketEnvelope"
	ReferenceModel           = "referenceModel"
	TierEnvelope             = "tierEnvelope"
	Isolation                = "isolation"
	Fairness                 = "fairness"
	NoStarvation             = "noStarvation"
	Counts                   = "counts"
	RedisKeys                = "redisKeys"
	OutageEnvelope           = "outageEnvelope"
	DenyCacheExact           = "denyCacheExact"
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
	// Vacuous: the property held because there was nothing to judge (no refused decision,
	// no identified user, an empty trace); OK is true, and Summary starts "vacuous:".
	Vacuous bool `json:"vacuous,omitempty"`
}

// vacuous is a property that held with nothing to judge.
func vacuous(name, why string) Result {
	return Result{Name: name, OK: true, Vacuous: true, Summary: "vacuous: " + why}
}

func (r *Result) violate(format string, args ...any) {
	r.OK = false
	r.Count++
	if len(r.Violations) < maxViolations {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

// Checker judges one property from the main replay's outcomes as they come, in event order
// (Observe), and gives its verdict at the end (Finish). Nothing requires a run's outcomes
// to be kept: a checker holds what its property needs (a window's tallies, a bucket's
// ideal level), so a million calls are judged in the memory of a few.
type Checker interface {
	Observe(ev traffic.Event, o engine.Outcome)
	Finish(ctx context.Context, res *engine.Result) (Result, error)
}

// Replayer replays events from empty Redis at virtual time zero, one replay per call, under
// the config it was made for: isolation needs replays without the other users.
// *engine.Session is one.
type Replayer interface {
	Replay(ctx context.Context, events iter.Seq[traffic.Event], observe engine.Observer) (*engine.Result, error)
	Close()
}

// ReplayOptions are how a property's replays differ from the main replay, beside the config.
type ReplayOptions struct {
	// OneReplica: one proxy replica instead of the scenario's (isolation replays users
	// alone).
	OneReplica bool
	// NoDenyCache: the limiters ask Redis for every decision (engine.Options.NoDenyCache).
	NoDenyCache bool
}

// NewReplayer makes a Replayer for cfg (nil: the scenario's own) with opts.
type NewReplayer func(cfg *v1alpha1.RateLimitConfig, opts ReplayOptions) (Replayer, error)

// Input is a run about to start.
type Input struct {
	Scenario *scenario.Scenario
	Traffic  *traffic.Traffic
	Replayer NewReplayer
	// Model is a run decided by the reference model (--engine model): the properties that
	// need Redis, or compare the limiter with the model, are reported as not applicable.
	Model bool
	// Outages are the scenario's faults as the engine takes them.
	Outages []engine.Outage
}

// notApplicable is a property that a run decided by the model cannot judge.
func notApplicable(name, why string) Result {
	return Result{Name: name, OK: true, NotApplicable: true, Summary: "not applicable with --engine model: " + why}
}

// Start returns the checkers of every property the scenario expects, in a fixed order.
func Start(in Input) []Checker {
	e := in.Scenario.Expect
	cfg := in.Scenario.RateLimiting
	var out []Checker
	switch {
	case scenario.On(e.RejectionChangesNoBucket) && in.Model:
		out = append(out, fixed(notApplicable(RejectionChangesNoBucket, "it is judged from bucket levels observed in Redis, and the model "+
			"never changes a bucket on a rejection by construction (run with --engine redis to observe it)")))
	case scenario.On(e.RejectionChangesNoBucket):
		out = append(out, &rejections{r: Result{Name: RejectionChangesNoBucket, OK: true}})
	}
	if scenario.On(e.TokenBucketEnvelope) {
		out = append(out, newEnvelope(cfg, len(in.Outages) > 0))
	}
	switch {
	case scenario.On(e.ReferenceModel) && in.Model:
		out = append(out, fixed(notApplicable(ReferenceModel, "the model made the decisions, so there is no limiter to compare it with")))
	case scenario.On(e.ReferenceModel):
		out = append(out, newReference(cfg, in.Traffic.Epoch))
	}
	if e.OutageEnvelopeOn(in.Scenario.LocalOutages()) {
		out = append(out, newOutageEnvelope(cfg, in.Scenario.Replicas, in.Outages))
	}
	switch {
	case e.DenyCacheExactOn(in.Traffic.Count) && in.Model:
		out = append(out, fixed(notApplicable(DenyCacheExact, "the model has no deny cache to compare")))
	case e.DenyCacheExactOn(in.Traffic.Count):
		out = append(out, newDenyCacheExact(in.Traffic, in.Outages, in.Replayer))
	}
	if e.TierEnvelopeOn(len(cfg.Tiers) > 0) {
		out = append(out, newTierEnvelope(cfg))
	}
	if e.Isolation != nil {
		out = append(out, newIsolation(*e.Isolation, cfg, in.Traffic, in.Replayer))
	}
	if e.Fairness != nil {
		out = append(out, newFairness(*e.Fairness, in.Traffic.Duration))
	}
	if e.NoStarvation != nil {
		out = append(out, newNoStarvation(*e.NoStarvation, in.Traffic.Duration))
	}
	if len(e.Counts) > 0 {
		out = append(out, newCounts(e.Counts))
	}
	switch {
	case e.RedisKeys != nil && in.Model:
		out = append(out, fixed(notApplicable(RedisKeys, "there is no Redis, so no keys to count")))
	case e.RedisKeys != nil:
		out = append(out, redisKeys(*e.RedisKeys))
	}
	return out
}

// Finish collects every checker's verdict, in order.
func Finish(ctx context.Context, checkers []Checker, res *engine.Result) ([]Result, error) {
	out := make([]Result, 0, len(checkers))
	for _, c := range checkers {
		r, err := c.Finish(ctx, res)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// fixed is a verdict known before the run.
type fixed Result

func (fixed) Observe(traffic.Event, engine.Outcome) {}

func (f fixed) Finish(context.Context, *engine.Result) (Result, error) { return Result(f), nil }

// judgeAll feeds a checker a whole run given as lists: the Check functions, for tests and
// doctored runs.
func judgeAll(c Checker, events []traffic.Event, outs []engine.Outcome) Result {
	for i, o := range outs {
		c.Observe(events[i], o)
	}
	r, err := c.Finish(context.Background(), &engine.Result{Events: len(outs)})
	if err != nil {
		return Result{Name: "?", Summary: err.Error()}
	}
	return r
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

// plural writes n and the noun, with an s when n is not 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
