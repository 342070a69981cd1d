package check

import (
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// window is [start, end) of the run.
type window struct{ start, end time.Duration }

func windows(duration, size time.Duration) []window {
	if size <= 0 || size >= duration {
		return []window{{0, duration}}
	}
	var out []window
	for s := time.Duration(0); s < duration; s += size {
		out = append(out, window{s, min(s+size, duration)})
	}
	return out
}

// CheckFairness judges fairness with Jain's index, (Σx)² / (n Σx²), of the tokens admitted
// to the users who asked for more than their fair share (the tokens admitted in all, over
// the number of users who asked): a user who asked for less than that got what they asked
// and is not a victim of unfairness. 1 is perfectly even, 1/n is one user taking all. Judged
// over the whole run, or every window when window is set (windows with fewer than two such
// users are skipped). Anonymous calls are no user's and are left out.
func CheckFairness(f scenario.Fairness, tr *traffic.Traffic, outs []engine.Outcome) Result {
	r := Result{Name: Fairness, OK: true}
	judged := 0
	lowest, lowestN := 2.0, 0
	for _, w := range windows(tr.Duration, f.Window.Duration) {
		demand, admitted := map[string]int64{}, map[string]int64{}
		var total int64
		for i, e := range tr.Events {
			if e.User == "" || e.At < w.start || e.At >= w.end {
				continue
			}
			cost := eventCost(e)
			demand[e.User] += cost
			if outs[i].Allowed {
				admitted[e.User] += cost
				total += cost
			}
		}
		if len(demand) == 0 {
			continue
		}
		var xs []float64
		for _, u := range sortedUsers(demand) {
			// demand > total/n, in integers.
			if demand[u]*int64(len(demand)) > total {
				xs = append(xs, float64(admitted[u]))
			}
		}
		if len(xs) < 2 {
			continue
		}
		judged++
		j := jain(xs)
		if j < lowest {
			lowest, lowestN = j, len(xs)
		}
		if j < f.Min {
			r.violate("[%s, %s): Jain's index %.4f < %v over %d users above their fair share", at(w.start), at(w.end), j, f.Min, len(xs))
		}
	}
	switch {
	case judged == 0:
		r.OK = false
		r.Summary = "nothing to judge: no window had two users asking for more than their fair share (check the traffic, or drop fairness)"
	case r.OK:
		r.Summary = fmt.Sprintf("Jain's index at least %.4f (lowest over %d users) in %s, min %v", lowest, lowestN, plural(judged, "window"), f.Min)
	default:
		r.Summary = fmt.Sprintf("Jain's index below %v in %s of %d (lowest %.4f)", f.Min, plural(r.Count, "window"), judged, lowest)
	}
	return r
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
	r := Result{Name: NoStarvation, OK: true}
	users := ns.Users
	if len(users) == 0 {
		users = identifiedUsers(tr.Events)
	}
	checked := map[string]bool{}
	for _, u := range users {
		checked[u] = true
	}
	judged := 0
	for _, w := range windows(tr.Duration, ns.Window.Duration) {
		asked, admitted := map[string]int{}, map[string]int{}
		for i, e := range tr.Events {
			if !checked[e.User] || e.At < w.start || e.At >= w.end {
				continue
			}
			asked[e.User]++
			if outs[i].Allowed {
				admitted[e.User]++
			}
		}
		for _, u := range sortedUsers(asked) {
			judged++
			if need := min(ns.Min, asked[u]); admitted[u] < need {
				r.violate("%s admitted %d of %d calls in [%s, %s), fewer than %d", who(u), admitted[u], asked[u], at(w.start), at(w.end), need)
			}
		}
	}
	if r.OK {
		r.Summary = fmt.Sprintf("every user admitted at least %d times per %s in all %s", ns.Min, ns.Window.Duration, plural(judged, "user-window"))
	} else {
		r.Summary = fmt.Sprintf("%s starved (of %d)", plural(r.Count, "user-window"), judged)
	}
	return r
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
