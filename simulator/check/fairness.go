package check

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// windows cut a run of the given duration into windows of the given size, [start, end):
// one window for the whole run when size is 0 or not shorter than the run. Events come in
// time order, so a window is judged when the first event after it arrives and only one
// window's tallies are held at a time.
type windows struct {
	duration, size time.Duration
	cur            int // the window of the events being tallied; -1 before the first
}

func newWindows(duration, size time.Duration) windows {
	if size <= 0 || size >= duration {
		size = 0
	}
	return windows{duration: duration, size: size, cur: -1}
}

// of is the window an instant falls in.
func (w windows) of(t time.Duration) int {
	if w.size == 0 {
		return 0
	}
	return int(t / w.size)
}

// bounds are window k's start and end.
func (w windows) bounds(k int) (time.Duration, time.Duration) {
	if w.size == 0 {
		return 0, w.duration
	}
	start := time.Duration(k) * w.size
	return start, min(start+w.size, w.duration)
}

// CheckFairness judges fairness with Jain's index, (Σx)² / (n Σx²), of the tokens admitted
// to the users who asked for more than their fair share (the tokens admitted in all, over
// the number of users who asked): a user who asked for less than that got what they asked
// and is not a victim of unfairness. 1 is perfectly even, 1/n is one user taking all. Judged
// over the whole run, or every window when window is set (windows with fewer than two such
// users are skipped). Anonymous calls are no user's and are left out.
func CheckFairness(f scenario.Fairness, tr *traffic.Traffic, outs []engine.Outcome) Result {
	return judgeAll(newFairness(f, tr.Duration), tr.Events(), outs)
}

type fairness struct {
	r               Result
	f               scenario.Fairness
	w               windows
	users           map[string]share // the current window's, per user
	total           int64
	judged, lowestN int
	lowest          float64
}

// share is the cost a user asked and was admitted in a window.
type share struct{ demand, admitted int64 }

func newFairness(f scenario.Fairness, duration time.Duration) *fairness {
	return &fairness{r: Result{Name: Fairness, OK: true}, f: f, w: newWindows(duration, f.Window.Duration),
		users: map[string]share{}, lowest: 2}
}

func (c *fairness) Observe(ev traffic.Event, o engine.Outcome) {
	if ev.User == "" {
		return
	}
	if k := c.w.of(ev.At); k != c.w.cur {
		c.judge()
		c.w.cur = k
	}
	cost := eventCost(ev)
	sh := c.users[ev.User]
	sh.demand += cost
	if o.Admitted() {
		sh.admitted += cost
		c.total += cost
	}
	c.users[ev.User] = sh
}

// judge computes the index of the current window and starts the next one afresh.
func (c *fairness) judge() {
	defer func() { clear(c.users); c.total = 0 }()
	if len(c.users) == 0 {
		return
	}
	var xs []float64
	for _, u := range sortedUsers(c.users) {
		// demand > total/n, in integers.
		if sh := c.users[u]; sh.demand*int64(len(c.users)) > c.total {
			xs = append(xs, float64(sh.admitted))
		}
	}
	if len(xs) < 2 {
		return
	}
	c.judged++
	j := jain(xs)
	if j < c.lowest {
		c.lowest, c.lowestN = j, len(xs)
	}
	if j < c.f.Min {
		start, end := c.w.bounds(c.w.cur)
		c.r.violate("[%s, %s): Jain's index %.4f < %v over %d users above their fair share", at(start), at(end), j, c.f.Min, len(xs))
	}
}

func (c *fairness) Finish(context.Context, *engine.Result) (Result, error) {
	c.judge()
	r := c.r
	switch {
	case c.judged == 0:
		r.OK = false
		r.Summary = "nothing to judge: no window had two users asking for more than their fair share (check the traffic, or drop fairness)"
	case r.OK:
		r.Summary = fmt.Sprintf("Jain's index at least %.4f (lowest over %d users) in %s, min %v", c.lowest, c.lowestN, plural(c.judged, "window"), c.f.Min)
	default:
		r.Summary = fmt.Sprintf("Jain's index below %v in %s of %d (lowest %.4f)", c.f.Min, plural(r.Count, "window"), c.judged, c.lowest)
	}
	return r, nil
}

// jain is Jain's fairness index of xs; 1 when every x is 0 (nobody got more than anyone).
func jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 1
	}
	return sum * sum / (float64(len(xs)) * sq)
}

// CheckNoStarvation judges noStarvation: in every window, every checked user who asked was
// admitted at least min times (or as often as they asked, when they asked fewer times).
func CheckNoStarvation(ns scenario.NoStarvation, tr *traffic.Traffic, outs []engine.Outcome) Result {
	return judgeAll(newNoStarvation(ns, tr.Duration), tr.Events(), outs)
}

type noStarvation struct {
	r      Result
	ns     scenario.NoStarvation
	w      windows
	listed map[string]bool   // nil: every identified user
	users  map[string]served // the current window's, per user
	judged int
}

// served counts a user's calls asked and admitted in a window.
type served struct{ asked, admitted int }

func newNoStarvation(ns scenario.NoStarvation, duration time.Duration) *noStarvation {
	c := &noStarvation{r: Result{Name: NoStarvation, OK: true}, ns: ns, w: newWindows(duration, ns.Window.Duration),
		users: map[string]served{}}
	if len(ns.Users) > 0 {
		c.listed = map[string]bool{}
		for _, u := range ns.Users {
			c.listed[u] = true
		}
	}
	return c
}

func (c *noStarvation) Observe(ev traffic.Event, o engine.Outcome) {
	if ev.User == "" || (c.listed != nil && !c.listed[ev.User]) {
		return
	}
	if k := c.w.of(ev.At); k != c.w.cur {
		c.judge()
		c.w.cur = k
	}
	sv := c.users[ev.User]
	sv.asked++
	if o.Admitted() {
		sv.admitted++
	}
	c.users[ev.User] = sv
}

func (c *noStarvation) judge() {
	start, end := c.w.bounds(c.w.cur)
	for _, u := range sortedUsers(c.users) {
		c.judged++
		if sv := c.users[u]; sv.admitted < min(c.ns.Min, sv.asked) {
			c.r.violate("%s admitted %d of %d calls in [%s, %s), fewer than %d", who(u), sv.admitted, sv.asked, at(start), at(end), min(c.ns.Min, sv.asked))
		}
	}
	clear(c.users)
}

func (c *noStarvation) Finish(context.Context, *engine.Result) (Result, error) {
	c.judge()
	r := c.r
	switch {
	case r.OK && c.judged == 0:
		r = vacuous(NoStarvation, "no checked user asked in any window")
	case r.OK:
		r.Summary = fmt.Sprintf("every user admitted at least %s per %s in all %s", plural(c.ns.Min, "time"), c.ns.Window.Duration, plural(c.judged, "user-window"))
	default:
		r.Summary = fmt.Sprintf("%s starved (of %d)", plural(r.Count, "user-window"), c.judged)
	}
	return r, nil
}

func eventCost(e traffic.Event) int64 {
	var c int64
	for _, call := range e.Calls {
		c += int64(max(call.Cost, 1))
	}
	return c
}

func sortedUsers[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for u := range m {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}
