package check

import (
	"context"
	"fmt"
	"strings"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Tally counts calls (a batch of n is n calls) by what happened to them.
type Tally struct {
	Requests int64 `json:"requests"`
	// Admitted: let through by a decision (Redis's, the local buckets', or fail-open).
	Admitted int64 `json:"admitted"`
	// Rejected: refused: 429, 401 for an anonymous call a per-user limit applies to, or 503
	// (fail-closed).
	Rejected       int64 `json:"rejected"`
	ShadowRejected int64 `json:"shadowRejected"`
	// The calls decided while Redis was down, by failurePolicy (also in Admitted or
	// Rejected): let through by Allow, refused by Deny, admitted or refused by Local's local
	// buckets.
	FailOpen         int64 `json:"failOpen,omitempty"`
	FailClosed       int64 `json:"failClosed,omitempty"`
	DegradedAllowed  int64 `json:"degradedAllowed,omitempty"`
	DegradedRejected int64 `json:"degradedRejected,omitempty"`
}

// Add counts n calls with outcome o.
func (t *Tally) Add(o engine.Outcome, n int64) {
	t.Requests += n
	switch o.Outcome {
	case ratelimit.OutcomeAllowed:
		t.Admitted += n
	case ratelimit.OutcomeShadowRejected:
		t.ShadowRejected += n
	case ratelimit.OutcomeFailOpen:
		t.Admitted += n
		t.FailOpen += n
	case ratelimit.OutcomeDegradedAllowed:
		t.Admitted += n
		t.DegradedAllowed += n
	case ratelimit.OutcomeFailClosed:
		t.Rejected += n
		t.FailClosed += n
	case ratelimit.OutcomeDegradedRejected:
		t.Rejected += n
		t.DegradedRejected += n
	default:
		t.Rejected += n
	}
}

// Outage is the part of the tally that the failure policy decided, or "" when none was.
func (t *Tally) Outage() string {
	var parts []string
	for _, p := range []struct {
		n    int64
		name ratelimit.Outcome
	}{{t.FailOpen, ratelimit.OutcomeFailOpen}, {t.FailClosed, ratelimit.OutcomeFailClosed}, {t.DegradedAllowed, ratelimit.OutcomeDegradedAllowed}, {t.DegradedRejected, ratelimit.OutcomeDegradedRejected}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.name))
		}
	}
	return strings.Join(parts, ", ")
}

// CheckCounts judges explicit counts: the calls each entry selects (by user or user prefix,
// method, name) were admitted, rejected, shadow-rejected and asked within the bounds, in sum
// or for each user. A tally is one entry's sum, or one user's part of an eachUser entry; the
// summary counts the tallies out of bounds (each broken bound is a violation), and names the
// entries that matched no call, which judge nothing.
func CheckCounts(counts []scenario.Count, events []traffic.Event, outs []engine.Outcome) Result {
	return judgeAll(newCounts(counts), events, outs)
}

type counts struct {
	entries []scenario.Count
	sums    []Tally
	per     []map[string]*Tally // per user, for eachUser entries
}

func newCounts(entries []scenario.Count) *counts {
	c := &counts{entries: entries, sums: make([]Tally, len(entries)), per: make([]map[string]*Tally, len(entries))}
	for k := range entries {
		c.per[k] = map[string]*Tally{}
	}
	return c
}

func (c *counts) Observe(ev traffic.Event, o engine.Outcome) {
	for k, e := range c.entries {
		n := matching(e, ev)
		if n == 0 {
			continue
		}
		c.sums[k].Add(o, n)
		if e.EachUser {
			t := c.per[k][ev.User]
			if t == nil {
				t = &Tally{}
				c.per[k][ev.User] = t
			}
			t.Add(o, n)
		}
	}
}

// matching counts the calls of ev that entry e selects.
func matching(e scenario.Count, ev traffic.Event) int64 {
	if (e.User != "" && ev.User != e.User) || (e.UserPrefix != "" && !strings.HasPrefix(ev.User, e.UserPrefix)) {
		return 0
	}
	var n int64
	for _, call := range ev.Calls {
		if (e.Method == "" || call.Method == e.Method) && (e.Name == "" || call.Name == e.Name) {
			n++
		}
	}
	return n
}

func (c *counts) Finish(context.Context, *engine.Result) (Result, error) {
	r := Result{Name: Counts, OK: true}
	judged, failed := 0, 0
	var empty []string
	for k, e := range c.entries {
		label := countLabel(k, e)
		if c.sums[k].Requests == 0 {
			empty = append(empty, fmt.Sprintf("counts[%d]", k))
		}
		if !e.EachUser {
			judged++
			if !judge(&r, label, e, c.sums[k]) {
				failed++
			}
			continue
		}
		if len(c.per[k]) == 0 {
			judged++
			failed++
			r.violate("%s: no user made a matching call", label)
			continue
		}
		for _, u := range sortedUsers(c.per[k]) {
			judged++
			if !judge(&r, label+" "+who(u), e, *c.per[k][u]) {
				failed++
			}
		}
	}
	switch {
	case !r.OK:
		r.Summary = fmt.Sprintf("%d of %s out of bounds", failed, plural(judged, "count"))
	case len(empty) == len(c.entries):
		r = vacuous(Counts, "no call matched any counts entry")
	case len(empty) > 0:
		r.Summary = fmt.Sprintf("all %s within bounds; vacuous for %s (no call matched)", plural(judged, "count"), strings.Join(empty, ", "))
	default:
		r.Summary = fmt.Sprintf("all %s within bounds", plural(judged, "count"))
	}
	return r, nil
}

// judge checks one tally against an entry's bounds: false when one is broken.
func judge(r *Result, label string, c scenario.Count, t Tally) bool {
	ok := true
	for _, b := range []struct {
		name   string
		bounds *scenario.Bounds
		n      int64
	}{
		{"requests", c.Requests, t.Requests},
		{"admitted", c.Admitted, t.Admitted},
		{"rejected", c.Rejected, t.Rejected},
		{"shadowRejected", c.ShadowRejected, t.ShadowRejected},
		{"failOpen", c.FailOpen, t.FailOpen},
		{"failClosed", c.FailClosed, t.FailClosed},
		{"degradedAllowed", c.DegradedAllowed, t.DegradedAllowed},
		{"degradedRejected", c.DegradedRejected, t.DegradedRejected},
	} {
		if !b.bounds.Holds(b.n) {
			r.violate("%s: %s %d, want %s", label, b.name, b.n, b.bounds)
			ok = false
		}
	}
	return ok
}

// countLabel names counts entry k by its selectors: counts[0] (user "alice", search).
func countLabel(k int, c scenario.Count) string {
	var sel []string
	if c.User != "" {
		sel = append(sel, fmt.Sprintf("user %q", c.User))
	}
	if c.UserPrefix != "" {
		sel = append(sel, fmt.Sprintf("users %q*", c.UserPrefix))
	}
	if c.Method != "" {
		sel = append(sel, c.Method)
	}
	if c.Name != "" {
		sel = append(sel, c.Name)
	}
	if len(sel) == 0 {
		return fmt.Sprintf("counts[%d] (all calls)", k)
	}
	return fmt.Sprintf("counts[%d] (%s)", k, strings.Join(sel, ", "))
}
