package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// fixedDecider answers every decision the same way, and counts them.
type fixedDecider struct {
	d     Decision
	err   error
	calls int
}

func (f *fixedDecider) AllowAll(context.Context, []Request) (Decision, error) {
	f.calls++
	return f.d, f.err
}

// TestApplyFailurePolicy: the policy the proxy and the simulator both apply to a limiter's
// answer. Only a store failure reaches it; Local asks the local buckets, the others name it.
func TestApplyFailurePolicy(t *testing.T) {
	storeDown := errors.New("dial tcp: connection refused")
	invalid := &RequestError{Reason: "cost above capacity"}
	cfg := func(p v1alpha1.FailurePolicy, m v1alpha1.RateLimitMode) *v1alpha1.RateLimitConfig {
		return &v1alpha1.RateLimitConfig{Shared: bucketOf(1, time.Second), FailurePolicy: p, Mode: m}
	}
	type want struct {
		outcome    Outcome
		degraded   bool
		localCalls int
		err        error
	}
	cases := map[string]struct {
		reason string
		cfg    *v1alpha1.RateLimitConfig
		d      Decision
		err    error
		local  *fixedDecider // nil: no local buckets (Allow, Deny)
		want   want
	}{
		"RedisAllowed": {
			reason: "an answer from the store is the outcome, whatever the policy",
			cfg:    cfg(v1alpha1.FailurePolicyLocal, ""), d: Decision{Allowed: true}, local: &fixedDecider{},
			want: want{outcome: OutcomeAllowed},
		},
		"InvalidNeverFailsOpen": {
			reason: "a request no wait admits is refused, never handed to the policy",
			cfg:    cfg(v1alpha1.FailurePolicyAllow, ""), err: invalid,
			want: want{outcome: OutcomeInvalid, err: invalid},
		},
		"InvalidNotLocal": {
			reason: "nor to the local buckets",
			cfg:    cfg(v1alpha1.FailurePolicyLocal, ""), err: invalid, local: &fixedDecider{d: Decision{Allowed: true}},
			want: want{outcome: OutcomeInvalid, err: invalid},
		},
		"AllowFailsOpen": {
			reason: "Allow (also the default) lets the call through",
			cfg:    cfg("", ""), err: storeDown,
			want: want{outcome: OutcomeFailOpen, err: storeDown},
		},
		"DenyFailsClosed": {
			reason: "Deny refuses it",
			cfg:    cfg(v1alpha1.FailurePolicyDeny, ""), err: storeDown,
			want: want{outcome: OutcomeFailClosed, err: storeDown},
		},
		"LocalAdmits": {
			reason: "Local asks the local buckets: their admission is degraded_allowed",
			cfg:    cfg(v1alpha1.FailurePolicyLocal, ""), err: storeDown, local: &fixedDecider{d: Decision{Allowed: true}},
			want: want{outcome: OutcomeDegradedAllowed, degraded: true, localCalls: 1},
		},
		"LocalRejects": {
			reason: "their rejection is degraded_rejected",
			cfg:    cfg(v1alpha1.FailurePolicyLocal, ""), err: storeDown, local: &fixedDecider{},
			want: want{outcome: OutcomeDegradedRejected, degraded: true, localCalls: 1},
		},
		"LocalShadow": {
			reason: "in Shadow mode a local rejection is let through as shadow_rejected, as Redis's would be",
			cfg:    cfg(v1alpha1.FailurePolicyLocal, v1alpha1.RateLimitModeShadow), err: storeDown, local: &fixedDecider{},
			want: want{outcome: OutcomeShadowRejected, degraded: true, localCalls: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var local BatchDecider
			if tc.local != nil {
				local = tc.local
			}
			a := ApplyFailurePolicy(context.Background(), local, []Request{{Method: MethodToolsCall, Name: "t"}}, tc.cfg, tc.d, tc.err)
			got := want{outcome: a.Outcome, degraded: a.Degraded, err: a.Err}
			if tc.local != nil {
				got.localCalls = tc.local.calls
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{}), cmpopts.EquateErrors()); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
