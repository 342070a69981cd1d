package check

import (
	"context"
	"fmt"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckRejections judges rejectionChangesNoBucket from what the engine observed: a decision
// that was not admitted changed no bucket. Every bucket its script calls named (not only the
// shared ones, and in both directions: a rejection that drains a bucket or one that fills
// it) has the same effective level right after the decision as right before it, at the same
// virtual time. The seed project's bug (a per-user rejection that drains the shared bucket)
// is one case; a shared rejection that drains a per-user bucket, which no decision may show
// until much later, is another.
//
// Effective levels (refilled to that instant), not the stored fields: a script that merely
// rewrote a bucket's timestamp would change nothing a later call sees, and one that drained
// it would show here even if it stored the level in another form.
func CheckRejections(events []traffic.Event, outs []engine.Outcome) Result {
	return judgeAll(&rejections{r: Result{Name: RejectionChangesNoBucket, OK: true}}, events, outs)
}

type rejections struct {
	r       Result
	checked int
}

func (c *rejections) Observe(ev traffic.Event, o engine.Outcome) {
	if !judgedRejection(o) {
		return
	}
	if len(o.Peeks) == 0 {
		c.r.violate("%s %s %s: %s but not observed (run with observation on)", at(ev.At), who(ev.User), callName(ev), refusal(o))
		return
	}
	c.checked++
	for _, p := range o.Peeks {
		if p.Changed() {
			c.r.violate("%s %s %s: %s, yet the %s bucket went from %s to %s tokens",
				at(ev.At), who(ev.User), callName(ev), refusal(o), p.Bucket, level(p, p.Before, p.RawBefore), level(p, p.After, p.RawAfter))
		}
	}
}

func (c *rejections) Finish(context.Context, *engine.Result) (Result, error) {
	r := c.r
	switch {
	case !r.OK:
		r.Summary = fmt.Sprintf("%s changed a bucket (of %d observed)", plural(r.Count, "refused decision"), c.checked)
	case c.checked == 0:
		r = vacuous(RejectionChangesNoBucket, "no decision was refused by a bucket, so there was nothing to observe")
	default:
		r.Summary = fmt.Sprintf("%s observed; no bucket's level changed across any", plural(c.checked, "refused decision"))
	}
	return r, nil
}

// judgedRejection is a decision the limiter refused after asking Redis: a rejection, or an
// invalid request that made a script call anyway. Admitted calls, anonymous calls refused
// without a decision and invalid requests refused before Redis (no bucket to change) are not
// judged.
//
// Nor are refusals that asked no Redis: the deny cache's (denyCacheExact judges those) and
// the local buckets' during an outage (a LocalStore, the script's Go port, differential-tested
// against it in proxy/ratelimit).
func judgedRejection(o engine.Outcome) bool {
	switch {
	case o.Allowed || o.Outcome == ratelimit.OutcomeUnidentified || o.Cached || o.Degraded:
		return false
	case o.Invalid:
		return len(o.Peeks) > 0
	}
	return len(o.Buckets) > 0 || len(o.Peeks) > 0
}

func refusal(o engine.Outcome) string {
	switch {
	case o.Invalid:
		return "refused as invalid"
	case o.Rejected != nil:
		return "rejected by the " + o.Rejected.String() + " bucket"
	}
	return "rejected"
}

// level formats a peeked level in tokens, or the stored value when the bucket's size is
// unknown.
func level(p engine.Peek, units int64, raw string) string {
	if p.Unsized {
		return ratelimit.StoredValue(raw)
	}
	return tokens(units, p.PeriodUS)
}

// tokens formats a level in token-microseconds as tokens, to the thousandth.
func tokens(level, periodUS int64) string {
	if periodUS <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.3f", float64(level)/float64(periodUS))
}
