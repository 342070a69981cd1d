package check

import (
	"fmt"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
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
func CheckEnvelope(cfg *v1alpha1.RateLimitConfig, events []traffic.Event, outs []engine.Outcome) Result {
	r := Result{Name: Envelope, OK: true}
	type ideal struct {
		level, lastUS, startUS, admitted int64
		seen                             bool
	}
	m := model.New(cfg)
	buckets := map[model.Bucket]*ideal{}
	admitted := 0
	for i, o := range outs {
		if !o.Allowed {
			continue
		}
		admitted++
		ev := events[i]
		t := ev.At.Microseconds()
		uses, _ := m.Uses(ev.User, ev.Calls)
		for _, u := range uses {
			capacity := u.MaxTokens * u.PeriodUS
			b := buckets[u.Bucket]
			if b == nil {
				b = &ideal{}
				buckets[u.Bucket] = b
			}
			elapsed := t - b.lastUS
			if !b.seen || elapsed >= u.PeriodUS || elapsed*u.MaxTokens >= capacity-b.level {
				// Full again: windows that matter start here.
				b.level, b.startUS, b.admitted, b.seen = capacity, t, 0, true
			} else {
				b.level += elapsed * u.MaxTokens
			}
			b.lastUS = t
			b.level -= u.Cost * u.PeriodUS
			b.admitted += u.Cost
			if b.level < 0 {
				w := t - b.startUS
				bound := u.MaxTokens + w*u.MaxTokens/u.PeriodUS
				r.violate("%s admitted %d tokens in [%s, %s] (%s), above its envelope of %d (%d + %d per %s)",
					u.Bucket, b.admitted, at(usDur(b.startUS)), at(usDur(t)), usDur(w), bound, u.MaxTokens, u.MaxTokens, usDur(u.PeriodUS))
				// Judge what follows afresh, from empty.
				b.level, b.startUS, b.admitted = 0, t, 0
			}
		}
	}
	if r.OK {
		r.Summary = fmt.Sprintf("%s admitted through %s, each within maxTokens + rate × window for every window", plural(admitted, "call"), plural(len(buckets), "bucket"))
	} else {
		r.Summary = fmt.Sprintf("%s above a bucket's envelope", plural(r.Count, "window"))
	}
	return r
}
