package check

import (
	"fmt"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckNoDrain judges perUserRejectionNeverDrainsShared from what the engine observed: for
// every rejection in which a per-user bucket was short, each shared bucket of the call has
// the same effective level right after the call as right before it, at the same virtual
// time. Effective levels (refilled to that instant), not the stored fields: a script that
// merely rewrote a shared bucket's timestamp would change nothing a later call sees, and
// one that drained it would show here even if it stored the level in another form.
func CheckNoDrain(events []traffic.Event, outs []engine.Outcome) Result {
	r := Result{Name: NoDrain, OK: true}
	checked := 0
	for i, o := range outs {
		if o.Allowed || o.Buckets == nil || !perUserShort(o.Buckets) || !hasShared(o.Buckets) {
			continue
		}
		if len(o.Peeks) != len(o.Buckets) {
			r.violate("%s %s %s: rejected by a per-user bucket but not observed (run with observation on)", at(events[i].At), who(events[i].User), callName(events[i]))
			continue
		}
		checked++
		for k, b := range o.Buckets {
			p := o.Peeks[k]
			if b.Scope != ratelimit.ScopeShared || p.Before == p.After {
				continue
			}
			r.violate("%s %s %s: rejected by a per-user bucket, yet the %s bucket went from %s to %s tokens",
				at(events[i].At), who(events[i].User), callName(events[i]), b.BucketID, tokens(p.Before, p.PeriodUS), tokens(p.After, p.PeriodUS))
		}
	}
	switch {
	case !r.OK:
		r.Summary = fmt.Sprintf("%s drained a shared bucket (of %d observed)", plural(r.Count, "per-user rejection"), checked)
	case checked == 0:
		r.Summary = "vacuous: no call was rejected by a per-user bucket while a shared bucket applied"
	default:
		r.Summary = fmt.Sprintf("%s observed; every shared bucket's level unchanged across each", plural(checked, "per-user rejection"))
	}
	return r
}

func perUserShort(bs []ratelimit.BucketState) bool {
	for _, b := range bs {
		if b.Scope == ratelimit.ScopePerUser && b.Wait > 0 {
			return true
		}
	}
	return false
}

func hasShared(bs []ratelimit.BucketState) bool {
	for _, b := range bs {
		if b.Scope == ratelimit.ScopeShared {
			return true
		}
	}
	return false
}

// tokens formats a level in token-microseconds as tokens, to the thousandth.
func tokens(level, periodUS int64) string {
	if periodUS <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.3f", float64(level)/float64(periodUS))
}
