package check

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/model"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckReferenceModel judges referenceModel: the pure-Go model (package model), stepped
// through the same calls at the same virtual times, makes the same decision as the limiter
// for every call: the outcome, RetryAfter to the microsecond, and each bucket's cost,
// remaining tokens, time to full and wait. The limiter must also report Redis's clock as
// the call's virtual time.
//
// A refusal of the deny cache, which asked no Redis, is judged by what the cache promises: the
// model refuses too, and the wait the cache gives (from an upper bound of each level) is not
// longer than the model's. Calls decided while Redis was down (fail-open, fail-closed, the
// local buckets') reached no Redis: the model is not stepped through them.
func CheckReferenceModel(cfg *v1alpha1.RateLimitConfig, tr *traffic.Traffic, outs []engine.Outcome) Result {
	return judgeAll(newReference(cfg, tr.Epoch), tr.Events(), outs)
}

type reference struct {
	r     Result
	m     *model.Model
	epoch time.Time
	// decisions counts the decisions compared; withBuckets those that met a bucket; cached
	// those the deny cache refused; outage those decided while Redis was down.
	decisions, withBuckets, cached, outage int
}

func newReference(cfg *v1alpha1.RateLimitConfig, epoch time.Time) *reference {
	return &reference{r: Result{Name: ReferenceModel, OK: true}, m: model.New(cfg), epoch: epoch}
}

func (c *reference) Observe(ev traffic.Event, o engine.Outcome) {
	if o.Degraded || o.Outcome == ratelimit.OutcomeFailOpen || o.Outcome == ratelimit.OutcomeFailClosed {
		c.outage++
		return
	}
	c.decisions++
	atUS := ev.At.Microseconds()
	want := c.m.Decide(atUS, ev.User, ev.Tier, ev.Calls)
	c.m.Sweep(atUS)
	if len(want.Buckets) > 0 || len(o.Buckets) > 0 {
		c.withBuckets++
	}
	got := observed(o)
	if o.Cached {
		c.cached++
		if want.Outcome != ratelimit.OutcomeRejected || o.RetryAfter <= 0 || o.RetryAfter > want.RetryAfter {
			c.r.violate("%s %s %s: the deny cache refused (retry after %s) what the model decides as %s (retry after %s)",
				at(ev.At), who(ev.User), callName(ev), o.RetryAfter, want.Outcome, want.RetryAfter)
		}
	} else if !sameVerdict(want, got) { // cmp.Diff only to explain: it is slow for every call
		c.r.violate("%s %s %s: the model and the limiter disagree (-model +limiter):\n%s", at(ev.At), who(ev.User), callName(ev), cmp.Diff(want, got))
	}
	if !o.Time.IsZero() && !o.Time.Equal(c.epoch.Add(ev.At)) {
		c.r.violate("%s %s %s: the limiter decided at Redis time %s, not the virtual time %s",
			at(ev.At), who(ev.User), callName(ev), o.Time.UTC().Format(time.RFC3339Nano), c.epoch.Add(ev.At).UTC().Format(time.RFC3339Nano))
	}
}

func (c *reference) Finish(context.Context, *engine.Result) (Result, error) {
	r := c.r
	switch {
	case r.OK && c.withBuckets == 0:
		r = vacuous(ReferenceModel, fmt.Sprintf("no call met a bucket, so the script was never compared with the model (%s)", plural(c.decisions, "decision")))
	case r.OK:
		r.Summary = fmt.Sprintf("the model agrees with the limiter on all %s (%d with a bucket", plural(c.decisions, "decision"), c.withBuckets)
		if c.cached > 0 {
			r.Summary += fmt.Sprintf(", %d refused by the deny cache", c.cached)
		}
		r.Summary += ")"
		if c.outage > 0 {
			r.Summary += fmt.Sprintf("; %s decided while Redis was down not compared", plural(c.outage, "call"))
		}
	default:
		r.Summary = fmt.Sprintf("%s the model and the limiter disagree on (of %d)", plural(r.Count, "decision"), c.decisions)
	}
	return r, nil
}

func sameVerdict(a, b model.Verdict) bool {
	return a.Outcome == b.Outcome && a.RetryAfter == b.RetryAfter && slices.Equal(a.Buckets, b.Buckets)
}

// observed is the limiter's decision in the model's terms.
func observed(o engine.Outcome) model.Verdict {
	v := model.Verdict{RetryAfter: o.RetryAfter}
	switch {
	case o.Outcome == ratelimit.OutcomeUnidentified:
		v.Outcome = ratelimit.OutcomeUnidentified
	case o.Invalid:
		v.Outcome = ratelimit.OutcomeInvalid
	case o.Allowed:
		v.Outcome = ratelimit.OutcomeAllowed
	default:
		v.Outcome = ratelimit.OutcomeRejected
	}
	for _, b := range o.Buckets {
		v.Buckets = append(v.Buckets, model.State{ID: b.BucketID, Cost: b.Cost, Remaining: b.Remaining, Reset: b.Reset, Wait: b.Wait})
	}
	model.SortStates(v.Buckets)
	return v
}

func usDur(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
