package check

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckIsolation judges isolation by replaying: each checked user's calls alone must get
// the same outcomes (admitted or not, RetryAfter, the remaining tokens of the user's own
// buckets) as among everybody's calls. With scope perUser (the default) both replays keep only the
// per-user buckets, because shared buckets couple users by design; this catches a key
// scheme in which two users (or a user and a tool) share a bucket. With scope all the full
// config is kept and the everybody run is the scenario's own: "nobody else's traffic ever
// changed this user's outcome", true only when shared buckets are big enough.
func CheckIsolation(ctx context.Context, iso scenario.Isolation, cfg *v1alpha1.RateLimitConfig, events []traffic.Event, outs []engine.Outcome, rerun Rerun) (Result, error) {
	r := Result{Name: Isolation, OK: true}
	users := iso.Users
	if len(users) == 0 {
		users = identifiedUsers(events)
	}
	// Each user's calls, by index into events.
	mine := map[string][]int{}
	for i, e := range events {
		if slices.Contains(users, e.User) {
			mine[e.User] = append(mine[e.User], i)
		}
	}
	runCfg := cfg
	if iso.Scope != scenario.ScopeAll {
		runCfg = scenario.PerUserOnly(cfg)
	}
	groups := make([][]traffic.Event, len(users))
	for k, u := range users {
		for _, i := range mine[u] {
			groups[k] = append(groups[k], events[i])
		}
	}
	if iso.Scope != scenario.ScopeAll {
		groups = append(groups, events) // everybody, per-user buckets only
	}
	res, err := rerun(ctx, runCfg, groups)
	if err != nil {
		return r, fmt.Errorf("isolation replay: %w", err)
	}
	together := outs
	if iso.Scope != scenario.ScopeAll {
		together = res[len(users)].Outcomes
	}
	compared := 0
	for k, u := range users {
		alone := res[k].Outcomes
		for n, i := range mine[u] {
			compared++
			a, b := together[i], alone[n]
			if a.Outcome == b.Outcome && a.RetryAfter == b.RetryAfter && sameRemaining(a, b) {
				continue
			}
			r.violate("%s %s %s: with everybody: %s; alone: %s", at(events[i].At), who(u), callName(events[i]), describe(a), describe(b))
		}
	}
	scope := "per-user buckets"
	if iso.Scope == scenario.ScopeAll {
		scope = "all buckets"
	}
	if r.OK {
		r.Summary = fmt.Sprintf("%s: the same outcome for each of their %s with and without the other users' traffic (%s)", plural(len(users), "user"), plural(compared, "call"), scope)
	} else {
		r.Summary = fmt.Sprintf("%s changed when the other users' traffic was removed (%s)", plural(r.Count, "outcome"), scope)
	}
	return r, nil
}

// sameRemaining compares the user's own buckets: a shared bucket's remaining tokens differ
// with other users' traffic by design (and per-user-only replays keep unbounded shared
// buckets for weighted entries).
func sameRemaining(a, b engine.Outcome) bool {
	if len(a.Buckets) != len(b.Buckets) {
		return false
	}
	for i := range a.Buckets {
		x, y := a.Buckets[i], b.Buckets[i]
		if x.BucketID != y.BucketID || (x.Scope == ratelimit.ScopePerUser && x.Remaining != y.Remaining) {
			return false
		}
	}
	return true
}

func describe(o engine.Outcome) string {
	s := string(o.Outcome)
	if o.Rejected != nil {
		s += fmt.Sprintf(" by %s, retry after %s", o.Rejected, o.RetryAfter)
	}
	var left []string
	for _, b := range o.Buckets {
		left = append(left, fmt.Sprintf("%s %d", b.BucketID, b.Remaining))
	}
	if len(left) > 0 {
		s += " (left: " + strings.Join(left, ", ") + ")"
	}
	return s
}
