package ratelimit

import (
	"errors"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// The call vocabulary the proxy and the simulator share: which methods are limited, what a
// decision's outcome is called, and how a limiter's answer becomes one. Adding a method or an
// outcome is one edit here.

// The limited methods: tools/call (by params.name), prompts/get (by params.name),
// resources/read (by params.uri).
const (
	MethodToolsCall     = "tools/call"
	MethodPromptsGet    = "prompts/get"
	MethodResourcesRead = "resources/read"
)

// IsLimited reports whether method is one the limiter decides on.
func IsLimited(method string) bool {
	return method == MethodToolsCall || method == MethodPromptsGet || method == MethodResourcesRead
}

// Outcome is what became of a call: the outcome label of tollgate_decisions_total, the
// decision field of the decision log, and the simulator's outcomes.
type Outcome string

const (
	// OutcomeAllowed: every bucket held the cost, which was taken.
	OutcomeAllowed Outcome = "allowed"
	// OutcomeRejected: a bucket was short; nothing was taken.
	OutcomeRejected Outcome = "rejected"
	// OutcomeInvalid: no wait admits the request (a cost above a bucket's capacity).
	OutcomeInvalid Outcome = "invalid"
	// OutcomeShadowRejected: rejected or invalid in Shadow mode: let through, reported.
	OutcomeShadowRejected Outcome = "shadow_rejected"
	// OutcomeFailOpen: the store failed and failurePolicy is Allow: let through.
	OutcomeFailOpen Outcome = "fail_open"
	// OutcomeFailClosed: the store failed and failurePolicy is Deny: refused (503).
	OutcomeFailClosed Outcome = "fail_closed"
	// OutcomeUnidentified: a per-user bucket applies and the caller has no identity: refused
	// (401) without a decision.
	OutcomeUnidentified Outcome = "unidentified"
	// OutcomeUnlimited: no bucket applies (the decision log records such calls too, so a
	// what-if replay with a new limit sees them).
	OutcomeUnlimited Outcome = "unlimited"
	// OutcomeDegradedAllowed: the store failed and failurePolicy is Local: the replica's
	// local buckets admitted the call.
	OutcomeDegradedAllowed Outcome = "degraded_allowed"
	// OutcomeDegradedRejected: likewise, and the local buckets refused it (429).
	OutcomeDegradedRejected Outcome = "degraded_rejected"
)

// Degraded is the outcome of a decision the local buckets made for failurePolicy Local.
func (o Outcome) Degraded() Outcome {
	switch o {
	case OutcomeAllowed:
		return OutcomeDegradedAllowed
	case OutcomeRejected:
		return OutcomeDegradedRejected
	}
	return o
}

// Verdict is a limiter's answer in outcome terms, before the mode and the failure policy:
// allowed, rejected or invalid; a store error is reported as an error.
func Verdict(d Decision, err error) (Outcome, error) {
	var reqErr *RequestError
	switch {
	case errors.As(err, &reqErr):
		return OutcomeInvalid, nil
	case err != nil:
		return "", err
	case d.Allowed:
		return OutcomeAllowed, nil
	}
	return OutcomeRejected, nil
}

// OutcomeOf is the outcome of a limiter's answer under a config's mode and failure policy.
func OutcomeOf(d Decision, err error, cfg *v1alpha1.RateLimitConfig) Outcome {
	v, err := Verdict(d, err)
	if err != nil {
		if cfg != nil && cfg.FailurePolicy == v1alpha1.FailurePolicyDeny {
			return OutcomeFailClosed
		}
		return OutcomeFailOpen
	}
	return v.Under(cfg)
}

// Under is a verdict under a config's mode: in Shadow mode a rejection (and a request no
// wait admits) is let through as shadow_rejected.
func (o Outcome) Under(cfg *v1alpha1.RateLimitConfig) Outcome {
	if cfg != nil && cfg.Mode == v1alpha1.RateLimitModeShadow && (o == OutcomeRejected || o == OutcomeInvalid) {
		return OutcomeShadowRejected
	}
	return o
}

// Admits reports whether the proxy forwards a call with this outcome.
func (o Outcome) Admits() bool {
	switch o {
	case OutcomeAllowed, OutcomeShadowRejected, OutcomeFailOpen, OutcomeUnlimited, OutcomeDegradedAllowed:
		return true
	}
	return false
}
