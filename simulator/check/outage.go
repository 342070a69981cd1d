package check

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/model"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckOutageEnvelope judges outageEnvelope: with failurePolicy Local, what the replicas'
// local buckets admit while Redis is down stays within the bound docs/proxy.md states. For
// every bucket and every span of D, the cost the local buckets of all replicas together
// admitted through it is at most
//
//	C + r·D               for a shared bucket (and a per-user one with local.dividePerUser),
//	                      C = max(maxTokens, replicas), r = C / refillPeriod
//	replicas × (C_u + r_u·D)  for a per-user bucket that is not divided
//
// (divided buckets round down but keep at least one token each: replicas tokens between them
// when maxTokens < replicas). Judged as tokenBucketEnvelope is, over the declared config's
// bucket selection, with that capacity and rate. Redis's own admissions stay within the
// ordinary envelope (tokenBucketEnvelope, which leaves the local buckets' out), so over any
// window W holding D of outage a bucket admits at most its envelope plus this bound: the
// over-admission docs/proxy.md states.
func CheckOutageEnvelope(cfg *v1alpha1.RateLimitConfig, replicas int, outages []engine.Outage, events []traffic.Event, outs []engine.Outcome) Result {
	return judgeAll(newOutageEnvelope(cfg, replicas, outages), events, outs)
}

type outageEnvelope struct {
	r             Result
	m             *model.Model
	replicas      int64
	dividePerUser bool
	outages       []engine.Outage
	ideals        ideals
	// admitted counts the calls the local buckets admitted through a bucket.
	admitted int
}

func newOutageEnvelope(cfg *v1alpha1.RateLimitConfig, replicas int, outages []engine.Outage) *outageEnvelope {
	return &outageEnvelope{
		r: Result{Name: OutageEnvelope, OK: true}, m: model.New(cfg), replicas: int64(max(replicas, 1)),
		dividePerUser: cfg.Local != nil && cfg.Local.DividePerUser, outages: outages, ideals: newIdeals(),
	}
}

// bound is u as the local buckets of every replica together may hold it: the capacity of
// the bound, over the same refill period (so at that capacity's rate).
func (c *outageEnvelope) bound(u model.Use) model.Use {
	if u.ID.Scope == ratelimit.ScopePerUser && !c.dividePerUser {
		u.MaxTokens *= c.replicas
	} else {
		u.MaxTokens = max(u.MaxTokens, c.replicas)
	}
	return u
}

func (c *outageEnvelope) Observe(ev traffic.Event, o engine.Outcome) {
	if !o.Allowed || !o.Degraded {
		return
	}
	t := ev.At.Microseconds()
	uses, _ := c.m.Uses(ev.User, ev.Tier, ev.Calls)
	if len(uses) > 0 {
		c.admitted++
	}
	for _, u := range uses {
		if over := c.ideals.pay(c.bound(u), t); over != "" {
			c.r.violate("the local buckets of %s together: %s", plural(int(c.replicas), "replica"), over)
		}
	}
	c.ideals.sweep(t)
}

func (c *outageEnvelope) Finish(context.Context, *engine.Result) (Result, error) {
	r := c.r
	var down time.Duration
	for _, o := range c.outages {
		down += o.To - o.From
	}
	switch {
	case r.OK && c.admitted == 0:
		r = vacuous(OutageEnvelope, fmt.Sprintf("no call was admitted by the local buckets during %s of outage", down))
	case r.OK:
		r.Summary = fmt.Sprintf("%s admitted by the local buckets during %s of outage; each bucket within C + r·D between %s (shared buckets divided, per-user ones %s)",
			plural(c.admitted, "call"), down, plural(int(c.replicas), "replica"), map[bool]string{true: "divided too", false: "not: replicas × (C + r·D)"}[c.dividePerUser])
	default:
		r.Summary = fmt.Sprintf("%s above the local buckets' bound", plural(r.Count, "window"))
	}
	return r, nil
}
