package ratelimit

import "github.com/tollgate-dev/tollgate/api/v1alpha1"

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
