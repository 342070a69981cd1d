package check

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/model"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckTierEnvelope judges tierEnvelope: each tier's users get their tier's envelope and no
// more, and nothing less either. Two halves:
//
//   - Held to the right buckets (from the limiter's answer, against the declaration): every
//     per-user bucket a decision reports for a user in tier T is one of T's, or a default
//     bucket that T does not replace (T's perUser replaces rateLimiting.perUser, T's tools
//     those tools' perUser buckets, an unlimited T every per-user bucket); a user in no tier
//     meets no tier's bucket. A limiter that ignored the tier would hold a more generous
//     tier's users to the default bucket, and is caught here even when the default bucket
//     never rejects them.
//   - Within the tier's envelope: for every tiered user and every window, the cost admitted
//     through each of the per-user buckets that apply to them in their tier is at most
//     maxTokens + maxTokens × window / refillPeriod (judged as tokenBucketEnvelope judges
//     it, over the model's bucket selection for the tier, not the limiter's).
//
// It fails when no call was made in any tier: a typo in a user's claims or headers would
// otherwise leave every user in the default buckets and the tiers untested.
func CheckTierEnvelope(cfg *v1alpha1.RateLimitConfig, events []traffic.Event, outs []engine.Outcome) Result {
	return judgeAll(newTierEnvelope(cfg), events, outs)
}

type tierEnvelope struct {
	r      Result
	m      *model.Model
	tiers  map[string]v1alpha1.RateLimitTier
	order  []string // the tiers as declared
	ideals ideals
	calls  map[string]*tierCalls
}

// tierCalls counts one tier's calls (a batch of n is n) and those admitted.
type tierCalls struct{ calls, admitted int64 }

func newTierEnvelope(cfg *v1alpha1.RateLimitConfig) *tierEnvelope {
	c := &tierEnvelope{r: Result{Name: TierEnvelope, OK: true}, m: model.New(cfg), tiers: map[string]v1alpha1.RateLimitTier{},
		ideals: newIdeals(), calls: map[string]*tierCalls{}}
	if cfg != nil {
		for _, t := range cfg.Tiers {
			c.tiers[t.Name] = t
			c.order = append(c.order, t.Name)
		}
	}
	return c
}

func (c *tierEnvelope) Observe(ev traffic.Event, o engine.Outcome) {
	tier, known := c.tiers[ev.Tier]
	if ev.Tier != "" {
		if !known {
			c.r.violate("%s %s %s: tier %q is not in rateLimiting.tiers", at(ev.At), who(ev.User), callName(ev), ev.Tier)
			return
		}
		n := c.calls[ev.Tier]
		if n == nil {
			n = &tierCalls{}
			c.calls[ev.Tier] = n
		}
		n.calls += int64(len(ev.Calls))
		if o.Admitted() {
			n.admitted += int64(len(ev.Calls))
		}
	}
	for _, b := range o.Buckets {
		if b.Scope != ratelimit.ScopePerUser {
			continue
		}
		if why := wrongBucket(ev.Tier, tier, b.BucketID); why != "" {
			c.r.violate("%s %s %s: %s (%s)", at(ev.At), inTier(ev), callName(ev), why, decided(o))
		}
	}
	// What Redis admitted: during an outage the local buckets (outageEnvelope) and fail-open
	// admit beyond a tier's envelope by design.
	if !o.Allowed || o.Degraded || ev.Tier == "" {
		return
	}
	t := ev.At.Microseconds()
	uses, _ := c.m.Uses(ev.User, ev.Tier, ev.Calls)
	for _, u := range uses {
		if u.ID.Scope != ratelimit.ScopePerUser {
			continue
		}
		if over := c.ideals.pay(u, t); over != "" {
			c.r.violate("%s: %s", inTier(ev), over)
		}
	}
	c.ideals.sweep(t)
}

// wrongBucket says why per-user bucket b must not decide a call in tier name (declared as
// t), or "" when it may.
func wrongBucket(name string, t v1alpha1.RateLimitTier, b ratelimit.BucketID) string {
	switch {
	case b.Tier != "" && b.Tier != name:
		return fmt.Sprintf("held to %s, a bucket of another tier", b)
	case b.Tier != "":
		return ""
	case name == "":
		return ""
	case t.Unlimited:
		return fmt.Sprintf("held to the default %s bucket, yet tier %q is unlimited", b, name)
	case b.Kind == "" && t.PerUser != nil:
		return fmt.Sprintf("held to the default %s bucket, which tier %q replaces with its perUser", b, name)
	case b.Kind == "tool" && slices.ContainsFunc(t.Tools, func(tt v1alpha1.TierToolLimit) bool { return tt.Name == b.Name }):
		return fmt.Sprintf("held to the default %s bucket, which tier %q replaces with its own for the tool", b, name)
	}
	return ""
}

// inTier names an event's caller and tier for messages.
func inTier(ev traffic.Event) string {
	if ev.Tier == "" {
		return who(ev.User) + " (no tier)"
	}
	return fmt.Sprintf("%s (tier %s)", who(ev.User), ev.Tier)
}

// decided says what became of a decision for messages: "admitted", "rejected by user".
func decided(o engine.Outcome) string {
	if o.Rejected != nil {
		return "rejected by " + o.Rejected.String()
	}
	return string(o.Outcome)
}

func (c *tierEnvelope) Finish(context.Context, *engine.Result) (Result, error) {
	r := c.r
	var seen, unseen []string
	for _, name := range c.order {
		if n := c.calls[name]; n != nil {
			seen = append(seen, fmt.Sprintf("%s %d of %d admitted", name, n.admitted, n.calls))
		} else {
			unseen = append(unseen, name)
		}
	}
	switch {
	case !r.OK:
		r.Summary = fmt.Sprintf("%s: tiered users held to the wrong buckets or above their tier's envelope", plural(r.Count, "violation"))
	case len(seen) == 0:
		// Not a vacuous pass: tiers nobody was in are tiers never tested, most likely a typo
		// in the users' claims or headers.
		r.violate("no call was made in any tier: check the users' claims and headers against rateLimiting.tiers (%s)", strings.Join(c.order, ", "))
		r.Summary = "no call was made in any tier, so no tier was tested"
	default:
		r.Summary = fmt.Sprintf("each tier's users held to their tier's buckets and within their envelopes (%s)", strings.Join(seen, "; "))
		if len(unseen) > 0 {
			r.Summary += "; no call in " + strings.Join(unseen, ", ")
		}
	}
	return r, nil
}
