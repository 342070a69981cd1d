package check

import (
	"fmt"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"strings"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Tally counts calls (a batch of n is n calls) by what happened to them.
type Tally struct {
	Requests       int64 `json:"requests"`
	Admitted       int64 `json:"admitted"`
	Rejected       int64 `json:"rejected"` // refused: 429, or 401 for an anonymous call a per-user limit applies to
	ShadowRejected int64 `json:"shadowRejected"`
}

// Add counts n calls with outcome o.
func (t *Tally) Add(o engine.Outcome, n int64) {
	t.Requests += n
	switch o.Outcome {
	case ratelimit.OutcomeAllowed:
		t.Admitted += n
	case ratelimit.OutcomeShadowRejected:
		t.ShadowRejected += n
	default:
		t.Rejected += n
	}
}

// CheckCounts judges explicit counts: the calls each entry selects (by user or user prefix,
// method, name) were admitted, rejected, shadow-rejected and asked within the bounds, in sum
// or for each user.
func CheckCounts(counts []scenario.Count, events []traffic.Event, outs []engine.Outcome) Result {
	r := Result{Name: Counts, OK: true}
	judged := 0
	for k, c := range counts {
		per := map[string]*Tally{}
		var sum Tally
		for i, e := range events {
			if (c.User != "" && e.User != c.User) || (c.UserPrefix != "" && !strings.HasPrefix(e.User, c.UserPrefix)) {
				continue
			}
			var n int64
			for _, call := range e.Calls {
				if (c.Method == "" || call.Method == c.Method) && (c.Name == "" || call.Name == c.Name) {
					n++
				}
			}
			if n == 0 {
				continue
			}
			sum.Add(outs[i], n)
			if per[e.User] == nil {
				per[e.User] = &Tally{}
			}
			per[e.User].Add(outs[i], n)
		}
		label := countLabel(k, c)
		if !c.EachUser {
			judged++
			judge(&r, label, c, sum)
			continue
		}
		if len(per) == 0 {
			r.violate("%s: no user made a matching call", label)
			continue
		}
		for _, u := range sortedUsers(per) {
			judged++
			judge(&r, label+" "+who(u), c, *per[u])
		}
	}
	if r.OK {
		r.Summary = fmt.Sprintf("all %s within bounds", plural(judged, "count"))
	} else {
		r.Summary = fmt.Sprintf("%s out of bounds (of %d)", plural(r.Count, "count"), judged)
	}
	return r
}

func judge(r *Result, label string, c scenario.Count, t Tally) {
	for _, b := range []struct {
		name   string
		bounds *scenario.Bounds
		n      int64
	}{
		{"requests", c.Requests, t.Requests},
		{"admitted", c.Admitted, t.Admitted},
		{"rejected", c.Rejected, t.Rejected},
		{"shadowRejected", c.ShadowRejected, t.ShadowRejected},
	} {
		if !b.bounds.Holds(b.n) {
			r.violate("%s: %s %d, want %s", label, b.name, b.n, b.bounds)
		}
	}
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
