package check

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/model"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckEnvelope judges tokenBucketEnvelope: for every bucket (each shared bucket, each
// user's instance of each per-user bucket) and every window [t1, t2] of the run, the cost
// the limiter admitted through it is at most maxTokens + maxTokens × (t2 − t1) / refillPeriod.
// Which buckets a call goes through comes from the config (the model's bucket selection),
// not from the limiter's answer, so a limiter that forgets a bucket is caught too.
//
// All windows at once, in one pass: admitted traffic stays within that envelope exactly when
// an ideal bucket that starts full, refills at the rate and pays every admitted cost never
// goes negative; and when it does, the window that breaks the envelope starts at the first
// admitted call after the ideal bucket was last full. Integer arithmetic in
// token-microseconds, as the limiter's.
//
// What Redis admitted is judged. While Redis is down, what the local buckets admit
// (failurePolicy Local) is outageEnvelope's to judge, and what failurePolicy Allow lets
// through is beyond any envelope by design: not a violation, but measured and reported as the
// excess (the calls an ideal bucket paying Redis's admissions and the fail-open ones together
// could not hold, per bucket).
func CheckEnvelope(cfg *v1alpha1.RateLimitConfig, events []traffic.Event, outs []engine.Outcome) Result {
	return judgeAll(newEnvelope(cfg, true), events, outs)
}

type envelope struct {
	r      Result
	m      *model.Model
	ideals ideals
	// admitted counts the admitted calls that went through a bucket.
	admitted int
	// failOpen counts the calls let through while Redis was down; excess are ideal buckets
	// fed Redis's admissions and those together, and over the cost each bucket could not
	// hold (by bucket name, per-user instances summed).
	failOpen int64
	excess   ideals
	over     map[string]int64
	// mayFailOpen: the run has outages, in which calls may fail open. Without any, excess is
	// not kept: it would be a second copy of ideals (a fifth of a 100 000-user run's live
	// heap) that nothing reads.
	mayFailOpen bool
}

func newEnvelope(cfg *v1alpha1.RateLimitConfig, mayFailOpen bool) *envelope {
	return &envelope{r: Result{Name: Envelope, OK: true}, m: model.New(cfg), ideals: newIdeals(), excess: newIdeals(), over: map[string]int64{},
		mayFailOpen: mayFailOpen}
}

func (c *envelope) Observe(ev traffic.Event, o engine.Outcome) {
	redis := o.Allowed && !o.Degraded
	if o.Outcome == ratelimit.OutcomeFailOpen {
		c.failOpen += int64(len(ev.Calls))
	}
	if c.failOpen > 0 && (redis || o.Outcome == ratelimit.OutcomeFailOpen) {
		// Only once a call failed open: until then the two sets of ideal buckets are equal.
		t := ev.At.Microseconds()
		uses, _ := c.m.Uses(ev.User, ev.Tier, ev.Calls)
		for _, u := range uses {
			if !c.excess.fits(u, t) {
				c.over[u.ID.String()] += u.Cost
			}
		}
		c.excess.sweep(t)
	}
	if !redis {
		return
	}
	t := ev.At.Microseconds()
	uses, _ := c.m.Uses(ev.User, ev.Tier, ev.Calls)
	if len(uses) > 0 {
		c.admitted++
	}
	for _, u := range uses {
		if over := c.ideals.pay(u, t); over != "" {
			c.r.violate("%s", over)
		}
		if c.failOpen == 0 && c.mayFailOpen {
			c.excess.fits(u, t)
		}
	}
	c.ideals.sweep(t)
	if c.failOpen == 0 && c.mayFailOpen {
		c.excess.sweep(t)
	}
}

// ideals are buckets as the envelope allows them, one per bucket (per user for per-user
// buckets): tokenBucketEnvelope keeps every bucket's, tierEnvelope the tiered users'
// per-user ones.
type ideals struct {
	buckets map[model.Key]ideal
	// writes counts the ideal buckets paid into since the last sweep.
	writes int
}

// ideal is a bucket as the envelope allows it: full at startUS, the last admitted call's
// level and time, the cost admitted since it was last full, and when it is full again.
type ideal struct {
	level, lastUS, startUS, admitted, fullAt int64
}

func newIdeals() ideals { return ideals{buckets: map[model.Key]ideal{}} }

// pay takes an admitted cost from the bucket's ideal level at t, and describes the window
// that broke the envelope when the level went below zero ("" when it did not).
func (c *ideals) pay(u model.Use, t int64) (over string) {
	capacity := u.MaxTokens * u.PeriodUS
	b, ok := c.buckets[u.Key()]
	if !ok || t >= b.fullAt {
		// Full again (or never used): windows that matter start here.
		b = ideal{level: capacity, startUS: t}
	} else {
		b.level += (t - b.lastUS) * u.MaxTokens
	}
	b.lastUS = t
	b.level -= u.Cost * u.PeriodUS
	b.admitted += u.Cost
	if b.level < 0 {
		w := t - b.startUS
		bound := u.MaxTokens + w*u.MaxTokens/u.PeriodUS
		over = fmt.Sprintf("%s admitted %d tokens in [%s, %s] (%s), above its envelope of %d (%d + %d per %s)",
			u.Bucket, b.admitted, at(usDur(b.startUS)), at(usDur(t)), usDur(w), bound, u.MaxTokens, u.MaxTokens, usDur(u.PeriodUS))
		// Judge what follows afresh, from empty.
		b.level, b.startUS, b.admitted = 0, t, 0
	}
	b.fullAt = t + (capacity-b.level+u.MaxTokens-1)/u.MaxTokens
	c.buckets[u.Key()] = b
	c.writes++
	return over
}

// fits takes an admitted cost from the bucket's ideal level at t when it holds the cost, and
// reports whether it did: a bucket that admits greedily, the most an envelope lets through.
func (c *ideals) fits(u model.Use, t int64) bool {
	capacity := u.MaxTokens * u.PeriodUS
	b, ok := c.buckets[u.Key()]
	if !ok || t >= b.fullAt {
		b = ideal{level: capacity, startUS: t}
	} else {
		b.level += (t - b.lastUS) * u.MaxTokens
	}
	b.lastUS = t
	if b.level < u.Cost*u.PeriodUS {
		c.buckets[u.Key()] = b
		return false
	}
	b.level -= u.Cost * u.PeriodUS
	b.fullAt = t + (capacity-b.level+u.MaxTokens-1)/u.MaxTokens
	c.buckets[u.Key()] = b
	c.writes++
	return true
}

// sweep forgets the ideal buckets that are full again: a full one is judged as one never
// used, so the check holds only the buckets in use, not every user ever seen. It walks them
// only once as many have been paid into since the last walk.
func (c *ideals) sweep(now int64) {
	if c.writes < len(c.buckets) || c.writes < 1024 {
		return
	}
	c.writes = 0
	for k, b := range c.buckets {
		if now >= b.fullAt {
			delete(c.buckets, k)
		}
	}
}

func (c *envelope) Finish(context.Context, *engine.Result) (Result, error) {
	r := c.r
	switch {
	case r.OK && c.admitted == 0:
		r = vacuous(Envelope, "no call was admitted through a bucket, so none could exceed its envelope")
	case r.OK:
		r.Summary = fmt.Sprintf("%s admitted through buckets; each bucket (every shared one, every user's per-user ones) within maxTokens + rate × window for every window", plural(c.admitted, "call"))
	default:
		r.Summary = fmt.Sprintf("%s above a bucket's envelope", plural(r.Count, "window"))
	}
	if c.failOpen > 0 {
		r.Summary += fmt.Sprintf("; %s let through while Redis was down (fail_open) not judged: the excess failurePolicy Allow admits", plural(int(c.failOpen), "call"))
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(c.over)) {
			parts = append(parts, fmt.Sprintf("%s %d", name, c.over[name]))
		}
		if len(parts) > 0 {
			r.Summary += ", tokens above the envelope: " + strings.Join(parts, ", ")
		} else {
			r.Summary += ", none above the envelope"
		}
	}
	return r, nil
}
