package main

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
)

// Faulty limiters: each wraps the real one with one bug that a property exists to catch.

// draining charges the shared buckets when a per-user bucket rejects: the seed project's bug
// (check each bucket in turn, taking from those that had room).
func draining(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	real, err := ratelimit.New(client, ns, name, cfg, opts...)
	if err != nil {
		return nil, err
	}
	sharedOnly := &v1alpha1.RateLimitConfig{Shared: cfg.Shared}
	drain, err := ratelimit.New(client, ns, name, sharedOnly)
	if err != nil {
		return nil, err
	}
	return decider{real, func(ctx context.Context, reqs []ratelimit.Request, d ratelimit.Decision) ratelimit.Decision {
		if !d.Allowed && d.Rejected != nil && d.Rejected.Scope == ratelimit.ScopePerUser {
			_, _ = drain.AllowAll(ctx, reqs)
		}
		return d
	}}, nil
}

// failingOpen admits what the buckets refuse, as a fail-open path taken by mistake would.
func failingOpen(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	real, err := ratelimit.New(client, ns, name, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return decider{real, func(_ context.Context, _ []ratelimit.Request, d ratelimit.Decision) ratelimit.Decision {
		d.Allowed, d.Rejected, d.RetryAfter = true, nil, 0
		return d
	}}, nil
}

// biggerBucket is the real limiter deployed with one more token per user than the scenario
// declares (a config that drifted from the one reviewed).
func biggerBucket(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	c := cfg.DeepCopy()
	c.PerUser.MaxTokens++
	return ratelimit.New(client, ns, name, c, opts...)
}

// colliding keys users by the first letter of their id: a key scheme that collides.
func colliding(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	real, err := ratelimit.New(client, ns, name, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return rewriting{real}, nil
}

// tierBlind decides every call with the default buckets, whatever the caller's tier: a
// limiter that ignores Request.Tier (or a proxy that never resolved one).
func tierBlind(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	real, err := ratelimit.New(client, ns, name, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return untiered{real}, nil
}

type untiered struct{ *ratelimit.Limiter }

func (u untiered) AllowAll(ctx context.Context, reqs []ratelimit.Request) (ratelimit.Decision, error) {
	blind := slices.Clone(reqs)
	for i := range blind {
		blind[i].Tier = ""
	}
	return u.Limiter.AllowAll(ctx, blind)
}

// biggerTier is the real limiter deployed with one more token in the first tier's perUser
// bucket than the scenario declares.
func biggerTier(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	c := cfg.DeepCopy()
	c.Tiers[0].PerUser.MaxTokens++
	return ratelimit.New(client, ns, name, c, opts...)
}

// undivided gives each replica local buckets of the whole config's size for failurePolicy
// Local: a proxy that forgot to divide the shared buckets among its replicas.
func undivided(ns, name string, cfg *v1alpha1.RateLimitConfig, _ int, now func() time.Time) (ratelimit.BatchDecider, error) {
	return ratelimit.New(ratelimit.NewLocalStore(ratelimit.LocalOptions{Now: now}), ns, name, cfg)
}

// refusingEarly is the real limiter with a deny cache whose bounds are one token too low
// (ratelimit.WithDenyCacheEarly): it refuses calls Redis would admit. One token of the
// fixture's 20 s bucket is 20 s × 1 token in token-µs.
func refusingEarly(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
	return ratelimit.New(client, ns, name, cfg, append(opts, ratelimit.WithDenyCacheEarly((20*time.Second).Microseconds()))...)
}

type decider struct {
	*ratelimit.Limiter
	after func(context.Context, []ratelimit.Request, ratelimit.Decision) ratelimit.Decision
}

func (d decider) AllowAll(ctx context.Context, reqs []ratelimit.Request) (ratelimit.Decision, error) {
	dec, err := d.Limiter.AllowAll(ctx, reqs)
	if err != nil {
		return dec, err
	}
	return d.after(ctx, reqs, dec), nil
}

type rewriting struct{ *ratelimit.Limiter }

func (r rewriting) AllowAll(ctx context.Context, reqs []ratelimit.Request) (ratelimit.Decision, error) {
	short := slices.Clone(reqs)
	for i := range short {
		if short[i].UserID != "" {
			short[i].UserID = short[i].UserID[:1]
		}
	}
	return r.Limiter.AllowAll(ctx, short)
}

// TestCheckersFail shows every property failing on a run built to break it: a fixture
// scenario under simulator/testdata/fail, replayed through the real limiter or a faulty
// one. The failing set must be exactly the expected one: the property hit, and the others
// that the same fault necessarily breaks. Each fault's fixture also passes with the real
// limiter, so the failure is the fault's.
func TestCheckersFail(t *testing.T) {
	cases := map[string]struct {
		reason  string
		fixture string
		limiter engine.LimiterFunc
		local   engine.LocalFunc
		failing []string
	}{
		"RejectionsRealLimiter": {
			reason: "the real limiter changes no bucket on a per-user rejection", fixture: "faulty-limiter.yaml",
		},
		"PerUserRejectionDrainsShared": {
			reason: "a limiter that charges the shared bucket on a per-user rejection is caught by the observed levels, even where the " +
				"shared bucket refills before anyone reads it, so that no decision (and not the reference model) shows it", fixture: "faulty-limiter.yaml",
			limiter: draining, failing: []string{check.RejectionChangesNoBucket},
		},
		"SharedRejectionsRealLimiter": {
			reason: "the real limiter changes no bucket on a shared rejection", fixture: "shared-rejection.yaml",
		},
		"SharedRejectionDrainsPerUser": {
			reason: "a script that takes from the buckets that had room when another was short (consumed one by one, not all or " +
				"nothing) drains per-user buckets on shared rejections: observed (and the model disagrees)", fixture: "shared-rejection.yaml",
			limiter: mutant(t, oneByOne), failing: []string{check.RejectionChangesNoBucket, check.ReferenceModel},
		},
		"Envelope": {
			reason: "a limiter that admits what its buckets refuse exceeds the token-bucket envelope (and differs from the model)", fixture: "faulty-limiter.yaml",
			limiter: failingOpen, failing: []string{check.Envelope, check.ReferenceModel},
		},
		"ReferenceModel": {
			reason: "a limiter whose buckets are one token bigger than declared disagrees with the model (and admits above the declared envelope)", fixture: "faulty-limiter.yaml",
			limiter: biggerBucket, failing: []string{check.Envelope, check.ReferenceModel},
		},
		"IsolationRealLimiter": {
			reason: "the real key scheme keeps ann and amy apart", fixture: "colliding-users.yaml",
		},
		"Isolation": {
			reason: "keys that collide couple two users' per-user buckets (and differ from the model)", fixture: "colliding-users.yaml",
			limiter: colliding, failing: []string{check.ReferenceModel, check.Isolation},
		},
		"IsolationAllBuckets": {
			reason: "with shared buckets kept, a greedy user changes a quiet one's outcomes", fixture: "isolation.yaml",
			failing: []string{check.Isolation},
		},
		"Fairness": {
			reason: "a shared bucket alone is first come, first served", fixture: "fairness.yaml",
			failing: []string{check.Fairness},
		},
		"NoStarvation": {
			reason: "a constant stream takes every token as it refills", fixture: "starvation.yaml",
			failing: []string{check.NoStarvation},
		},
		"Counts": {
			reason: "3/s against 2/s cannot all be admitted", fixture: "counts.yaml",
			failing: []string{check.Counts},
		},
		"RedisKeys": {
			reason: "50 users need 50 keys for the minute their buckets refill", fixture: "redis-keys.yaml",
			failing: []string{check.RedisKeys},
		},
		"TiersRealLimiter": {
			reason: "the real limiter holds each tier's users to their tier's buckets", fixture: "tiers.yaml",
		},
		"TierIgnored": {
			reason: "a limiter that ignores the tier holds pro users to the default bucket and lets trial users exceed theirs " +
				"(the trial user's bucket, as the model selects it, is over its envelope too, and the model disagrees)", fixture: "tiers.yaml",
			limiter: tierBlind, failing: []string{check.Envelope, check.ReferenceModel, check.TierEnvelope},
		},
		"TierBucketBigger": {
			reason: "a pro bucket one token bigger than declared admits pro users above their tier's envelope", fixture: "tiers.yaml",
			limiter: biggerTier, failing: []string{check.Envelope, check.ReferenceModel, check.TierEnvelope},
		},
		"OutageLocalRealLimiter": {
			reason: "local buckets divided among the replicas keep what they admit during the outage within the bound", fixture: "outage-local.yaml",
		},
		"OutageLocalNotDivided": {
			reason: "local buckets not divided among the 2 replicas admit twice the shared bucket's rate during the outage: above C + r·D " +
				"(Redis's own admissions stay within the envelope, and the model is not asked about the outage)", fixture: "outage-local.yaml",
			local: undivided, failing: []string{check.OutageEnvelope},
		},
		"DenyCacheRealLimiter": {
			reason: "the real deny cache refuses only what Redis would refuse", fixture: "deny-cache.yaml",
		},
		"DenyCacheEarly": {
			reason: "a deny cache one token early refuses calls Redis admits without it (and the model admits)", fixture: "deny-cache.yaml",
			limiter: refusingEarly, failing: []string{check.ReferenceModel, check.DenyCacheExact},
		},
		"TiersUnexercised": {
			reason: "claims that match no tier leave the tiers untested: a failure, not a vacuous pass", fixture: "tiers-unexercised.yaml",
			failing: []string{check.TierEnvelope},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := scenario.Load(filepath.Join("testdata", "fail", tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			p, err := sim.Prepare(s, nil)
			if err != nil {
				t.Fatal(err)
			}
			p.NewLocal = tc.local
			r, err := p.Run(t.Context(), tc.limiter)
			if err != nil {
				t.Fatal(err)
			}
			var failing []string
			for _, c := range r.Checks {
				if !c.OK {
					failing = append(failing, c.Name)
				}
			}
			if diff := cmp.Diff(tc.failing, failing); diff != "" {
				t.Errorf("%s\nfailing properties: -want +got:\n%s\nchecks: %+v", tc.reason, diff, r.Checks)
			}
			if r.OK != (len(tc.failing) == 0) {
				t.Errorf("scenario OK %v with failing %v", r.OK, failing)
			}
		})
	}
}
