package v1alpha1

import (
	"errors"
	"fmt"
	"time"
)

// Refill period bounds, as durations (the CRD states the same bounds in CEL).
const (
	minRefillPeriod = time.Millisecond
	maxRefillPeriod = 8760 * time.Hour
)

// Validate checks c against every bound the CRD's schema and CEL rules state, and the few that
// only Go can state (a cost no bucket could ever hold). It is the check the limiter runs before
// it accepts a config, and the operator's defense in depth for objects admitted around the
// rules. Each error names its bucket, like `tool "search" perUser bucket: maxTokens must be
// >= 1`; all are returned, joined. A nil config is valid (nothing is limited).
func (c *RateLimitConfig) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.Shared.validate("shared bucket"))
	add(c.PerUser.validate("perUser bucket"))
	if c.Shared == nil && c.PerUser == nil && len(c.Tools) == 0 && len(c.Prompts) == 0 && len(c.Resources) == 0 {
		add(errors.New("rateLimiting must set at least one of shared, perUser, tools, prompts or resources"))
	}
	switch c.FailurePolicy {
	case "", FailurePolicyAllow, FailurePolicyDeny:
	default:
		add(fmt.Errorf("failurePolicy %q: must be Allow or Deny", c.FailurePolicy))
	}
	switch c.Mode {
	case "", RateLimitModeEnforce, RateLimitModeShadow:
	default:
		add(fmt.Errorf("mode %q: must be Enforce or Shadow", c.Mode))
	}
	add(validateEntries(c, "tool", MaxNameLength, c.Tools, func(t ToolRateLimitConfig) entry {
		return entry{t.Name, t.Shared, t.PerUser, t.Cost}
	}))
	add(validateEntries(c, "prompt", MaxNameLength, c.Prompts, func(p PromptRateLimitConfig) entry {
		return entry{p.Name, p.Shared, p.PerUser, p.Cost}
	}))
	add(validateEntries(c, "resource", MaxURILength, c.Resources, func(r ResourceRateLimitConfig) entry {
		return entry{r.URI, r.Shared, r.PerUser, r.Cost}
	}))
	return errors.Join(errs...)
}

// entry is the shape tools, prompts and resources have in common.
type entry struct {
	name            string
	shared, perUser *RateLimitBucket
	cost            int32
}

func validateEntries[T any](c *RateLimitConfig, kind string, maxLen int, items []T, view func(T) entry) error {
	if len(items) > MaxRateLimitEntries {
		return fmt.Errorf("%ss: at most %d entries, got %d", kind, MaxRateLimitEntries, len(items))
	}
	var errs []error
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		e := view(it)
		label := fmt.Sprintf("%s %q", kind, e.name)
		switch {
		case e.name == "":
			label = fmt.Sprintf("%ss[%d]", kind, i)
			errs = append(errs, fmt.Errorf("%s: name must not be empty", label))
		case len(e.name) > maxLen:
			errs = append(errs, fmt.Errorf("%s: name longer than %d bytes", label, maxLen))
		case seen[e.name]:
			errs = append(errs, fmt.Errorf("%s: listed more than once", label))
		}
		seen[e.name] = true
		if e.shared == nil && e.perUser == nil {
			errs = append(errs, fmt.Errorf("%s: must set shared or perUser", label))
		}
		if err := e.shared.validate(label + " shared bucket"); err != nil {
			errs = append(errs, err)
		}
		if err := e.perUser.validate(label + " perUser bucket"); err != nil {
			errs = append(errs, err)
		}
		if e.cost < 0 || e.cost > MaxBucketTokens {
			errs = append(errs, fmt.Errorf("%s: cost must be between 1 and %d", label, MaxBucketTokens))
			continue
		}
		// A call of this entry takes cost tokens from its own buckets and the server-level
		// ones: a cost above any of their capacities could never be admitted.
		for _, b := range []struct {
			name string
			b    *RateLimitBucket
		}{{"shared", e.shared}, {"perUser", e.perUser}, {"server shared", c.Shared}, {"server perUser", c.PerUser}} {
			if b.b != nil && b.b.MaxTokens >= 1 && e.cost > b.b.MaxTokens {
				errs = append(errs, fmt.Errorf("%s: cost %d exceeds the %s bucket's maxTokens %d: no call could ever be admitted", label, e.cost, b.name, b.b.MaxTokens))
			}
		}
	}
	return errors.Join(errs...)
}

// validate checks one bucket; label names it in the error. A nil bucket is valid (unset).
func (b *RateLimitBucket) validate(label string) error {
	if b == nil {
		return nil
	}
	switch p := b.RefillPeriod.Duration; {
	case b.MaxTokens < 1:
		return fmt.Errorf("%s: maxTokens must be >= 1", label)
	case b.MaxTokens > MaxBucketTokens:
		return fmt.Errorf("%s: maxTokens must be <= %d", label, MaxBucketTokens)
	case p <= 0:
		return fmt.Errorf("%s: refillPeriod must be greater than 0", label)
	case p < minRefillPeriod:
		return fmt.Errorf("%s: refillPeriod must be at least 1ms", label)
	case p > maxRefillPeriod:
		return fmt.Errorf("%s: refillPeriod must be at most 8760h (one year)", label)
	case int64(b.MaxTokens) > MaxBucketTokenMilliseconds/(p.Milliseconds()+1): // no int64 overflow
		return fmt.Errorf("%s: maxTokens × refillPeriod is too large: maxTokens × (refillPeriod in milliseconds + 1) must not exceed %d (for example 100000 tokens per 24h)", label, int64(MaxBucketTokenMilliseconds))
	}
	return nil
}
