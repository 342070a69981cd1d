package ratelimit

import (
	"context"
	"errors"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// Degraded buckets: with failurePolicy Local, while the store is unreachable, each proxy
// replica decides with in-process buckets (a Limiter over a LocalStore) holding the same
// buckets, each shared one divided among the replicas so that together they admit what the
// shared bucket would. DividedConfig makes that config.

// DividedConfig is cfg with each shared bucket — server level and per entry — divided among
// replicas: maxTokens / replicas (at least 1) over the same refill period, so the rate is
// divided too; per-user buckets as well when cfg.Local.DividePerUser. Costs, entries and
// everything else stay. replicas < 2 returns cfg itself.
//
// Rounding down, the replicas admit at most maxTokens over a period, and at least one token
// each: with maxTokens < replicas they admit replicas tokens a period, not maxTokens
// (docs/proxy.md states the bound). A call whose cost is above a divided capacity is refused
// locally as one no wait admits: the limits hold, at the price of such calls during an outage.
func DividedConfig(cfg *v1alpha1.RateLimitConfig, replicas int32) *v1alpha1.RateLimitConfig {
	if cfg == nil || replicas < 2 {
		return cfg
	}
	c := cfg.DeepCopy()
	perUser := c.Local != nil && c.Local.DividePerUser
	divide := func(b *v1alpha1.RateLimitBucket) {
		if b != nil {
			b.MaxTokens = max(b.MaxTokens/replicas, 1)
		}
	}
	divide(c.Shared)
	if perUser {
		divide(c.PerUser)
	}
	for i := range c.Tools {
		divide(c.Tools[i].Shared)
		if perUser {
			divide(c.Tools[i].PerUser)
		}
	}
	for i := range c.Prompts {
		divide(c.Prompts[i].Shared)
		if perUser {
			divide(c.Prompts[i].PerUser)
		}
	}
	for i := range c.Resources {
		divide(c.Resources[i].Shared)
		if perUser {
			divide(c.Resources[i].PerUser)
		}
	}
	for i := range c.Tiers {
		if !perUser {
			break
		}
		divide(c.Tiers[i].PerUser)
		for j := range c.Tiers[i].Tools {
			divide(&c.Tiers[i].Tools[j].PerUser)
		}
	}
	return c
}

// StoreFailed reports whether err, a limiter's error, is a failure of its store (Redis, the
// network, a deadline): the errors a failure policy answers. A request no wait admits
// (ErrInvalidRequest) is a rejection, never a store failure: fail-open must not let it through.
func StoreFailed(err error) bool { return err != nil && !errors.Is(err, ErrInvalidRequest) }

// BatchDecider is what ApplyFailurePolicy needs of the local buckets: a Limiter over a
// LocalStore is one.
type BatchDecider interface {
	AllowAll(ctx context.Context, reqs []Request) (Decision, error)
}

// Answer is a limiter's answer after the failure policy: what the proxy acts on and the
// simulator counts.
type Answer struct {
	Decision Decision
	// Err is a *RequestError (the request is invalid), or the store's failure when no local
	// buckets decided instead; nil otherwise.
	Err error
	// Outcome is the answer's outcome under the config's mode and failure policy:
	// degraded_allowed or degraded_rejected when the local buckets decided.
	Outcome Outcome
	// Degraded: the store failed and the local buckets decided (failurePolicy Local).
	Degraded bool
}

// ApplyFailurePolicy is the failure policy applied to a limiter's answer (d, err) for reqs,
// the one place the proxy and the simulator both take it from. When err is a store failure
// and local is not nil (failurePolicy Local: local is a Limiter over a LocalStore with
// DividedConfig's buckets), local decides reqs instead and the outcome is degraded_*; else
// the outcome is OutcomeOf(d, err, cfg): fail_open (Allow) or fail_closed (Deny) for a store
// failure. ctx is for local's decision: the store's deadline may be spent already.
func ApplyFailurePolicy(ctx context.Context, local BatchDecider, reqs []Request, cfg *v1alpha1.RateLimitConfig, d Decision, err error) Answer {
	degraded := false
	if StoreFailed(err) && local != nil {
		d, err = local.AllowAll(ctx, reqs)
		degraded = true
	}
	outcome := OutcomeOf(d, err, cfg)
	if degraded {
		outcome = outcome.Degraded()
	}
	return Answer{Decision: d, Err: err, Outcome: outcome, Degraded: degraded}
}
