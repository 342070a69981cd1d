package check

import (
	"fmt"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"slices"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/model"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckReferenceModel judges referenceModel: the pure-Go model (package model), stepped
// through the same calls at the same virtual times, makes the same decision as the limiter
// for every call: the outcome, RetryAfter to the microsecond, and each bucket's cost,
// remaining tokens, time to full and wait. The limiter must also report Redis's clock as
// the call's virtual time.
func CheckReferenceModel(cfg *v1alpha1.RateLimitConfig, tr *traffic.Traffic, outs []engine.Outcome) Result {
	r := Result{Name: ReferenceModel, OK: true}
	m := model.New(cfg)
	for i, o := range outs {
		ev := tr.Events[i]
		want := m.Decide(ev.At.Microseconds(), ev.User, ev.Calls)
		got := observed(o)
		if !sameVerdict(want, got) { // cmp.Diff only to explain: it is slow for every call
			r.violate("%s %s %s: the model and the limiter disagree (-model +limiter):\n%s", at(ev.At), who(ev.User), callName(ev), cmp.Diff(want, got))
		}
		if !o.Time.IsZero() && !o.Time.Equal(tr.Epoch.Add(ev.At)) {
			r.violate("%s %s %s: the limiter decided at Redis time %s, not the virtual time %s",
				at(ev.At), who(ev.User), callName(ev), o.Time.UTC().Format(time.RFC3339Nano), tr.Epoch.Add(ev.At).UTC().Format(time.RFC3339Nano))
		}
	}
	if r.OK {
		r.Summary = fmt.Sprintf("the model agrees with the limiter on all %s", plural(len(outs), "decision"))
	} else {
		r.Summary = fmt.Sprintf("%s the model and the limiter disagree on (of %d)", plural(r.Count, "decision"), len(outs))
	}
	return r
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
