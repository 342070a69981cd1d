// Package report turns runs into what people read: a terminal summary, JSON for tools, and
// a self-contained HTML page with SVG charts. Everything in a report derives from the
// scenario, the seed and the decisions (no wall-clock time), so the same run gives the same
// bytes.
package report

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Bins is the number of time bins of the charts.
const Bins = 60

// chartUsers is how many users get their own series; the rest are summed as "others".
// levelUsers is how many of them get their per-user buckets charted.
const (
	chartUsers = 6
	levelUsers = 2
)

// Report is a whole simulator run.
type Report struct {
	Scenarios []*Scenario `json:"scenarios"`
	Passed    int         `json:"passed"`
	Failed    int         `json:"failed"`
}

// Add appends a scenario and counts it.
func (r *Report) Add(s *Scenario) {
	r.Scenarios = append(r.Scenarios, s)
	if s.OK {
		r.Passed++
	} else {
		r.Failed++
	}
}

// Scenario is one scenario's run.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	File        string `json:"file"`
	OK          bool   `json:"ok"`
	Seed        uint64 `json:"seed"`
	Server      string `json:"server"`
	Mode        string `json:"mode"`
	Replicas    int    `json:"replicas"`
	// Engine is "model" for a run decided by the reference model (--engine model); empty
	// for the real limiter on Redis.
	Engine      string          `json:"engine,omitempty"`
	Duration    string          `json:"duration"`
	Epoch       time.Time       `json:"epoch"`
	Events      int             `json:"events"`
	ScriptCalls int             `json:"scriptCalls"`
	Keys        engine.KeyStats `json:"keys"`
	Totals      check.Tally     `json:"totals"`
	Users       []UserRow       `json:"users"`
	Names       []NameRow       `json:"names"`
	Trace       *Trace          `json:"trace,omitempty"`
	Checks      []check.Result  `json:"checks"`
	Timeline    Timeline        `json:"timeline"`
	Levels      []Levels        `json:"levels,omitempty"`
}

// UserRow is one user's calls; User "" is the anonymous callers.
type UserRow struct {
	User string `json:"user"`
	check.Tally
}

// NameRow is one tool's, prompt's or resource's calls.
type NameRow struct {
	Method string `json:"method"`
	Name   string `json:"name"`
	check.Tally
}

// Trace compares a replayed trace's recorded decisions with the simulated ones: the what-if.
type Trace struct {
	File     string `json:"file"`
	Replayed int    `json:"replayed"` // calls replayed
	Skipped  int    `json:"skipped"`  // records not replayed (methods never limited, beyond the duration)
	// NowRejected were let through when recorded and are refused now; NowAdmitted the reverse.
	NowRejected int64 `json:"nowRejected"`
	NowAdmitted int64 `json:"nowAdmitted"`
}

// Timeline is calls per time bin, admitted and not, in total and for the busiest users.
type Timeline struct {
	Bin       time.Duration `json:"-"`
	BinMicros int64         `json:"binMicros"` // the width of a bin
	Series    []Series      `json:"series"`
}

// Series is one line of the timeline.
type Series struct {
	Label    string  `json:"label"`
	Admitted []int64 `json:"admitted"`
	Rejected []int64 `json:"rejected"` // every call not admitted (shadow rejections included)
}

// Levels is a bucket's lowest remaining tokens per time bin, after the decisions in it (-1:
// no decision touched the bucket in that bin).
type Levels struct {
	Bucket    string  `json:"bucket"`
	MaxTokens int32   `json:"maxTokens"`
	Remaining []int64 `json:"remaining"`
}

// Build assembles a scenario's report from its run.
func Build(s *scenario.Scenario, seed uint64, tr *traffic.Traffic, res *engine.Result, checks []check.Result) *Scenario {
	mode := string(s.RateLimiting.Mode)
	if mode == "" {
		mode = "Enforce"
	}
	out := &Scenario{
		Name: s.Name, Description: strings.TrimSpace(s.Description), File: s.File, Seed: seed,
		Server: s.Server.Namespace + "/" + s.Server.Name, Mode: mode, Replicas: s.Replicas,
		Duration: tr.Duration.String(), Epoch: tr.Epoch.UTC(), Events: len(tr.Events),
		ScriptCalls: res.ScriptCalls, Keys: res.Keys, Checks: checks, OK: true,
	}
	for _, c := range checks {
		out.OK = out.OK && c.OK
	}
	users := map[string]*check.Tally{}
	type nameKey struct{ method, name string }
	names := map[nameKey]*check.Tally{}
	for i, e := range tr.Events {
		o := res.Outcomes[i]
		n := int64(len(e.Calls))
		out.Totals.Add(o, n)
		if users[e.User] == nil {
			users[e.User] = &check.Tally{}
		}
		users[e.User].Add(o, n)
		for _, c := range e.Calls {
			k := nameKey{c.Method, c.Name}
			if names[k] == nil {
				names[k] = &check.Tally{}
			}
			names[k].Add(o, 1)
		}
	}
	for u, t := range users {
		out.Users = append(out.Users, UserRow{User: u, Tally: *t})
	}
	slices.SortFunc(out.Users, func(a, b UserRow) int { return cmp.Compare(a.User, b.User) })
	for k, t := range names {
		out.Names = append(out.Names, NameRow{Method: k.method, Name: k.name, Tally: *t})
	}
	slices.SortFunc(out.Names, func(a, b NameRow) int { return cmp.Or(cmp.Compare(a.Method, b.Method), cmp.Compare(a.Name, b.Name)) })
	if s.Trace != "" {
		out.Trace = traceDiff(s.Trace, tr, res)
	}
	out.Timeline, out.Levels = timeline(out.Users, tr, res)
	return out
}

func traceDiff(file string, tr *traffic.Traffic, res *engine.Result) *Trace {
	t := &Trace{File: file, Skipped: tr.TraceSkipped}
	for i, e := range tr.Events {
		if e.Source != traffic.SourceTrace {
			continue
		}
		n := int64(len(e.Calls))
		t.Replayed += len(e.Calls)
		switch change(e, res.Outcomes[i]) {
		case nowRejected:
			t.NowRejected += n
		case nowAdmitted:
			t.NowAdmitted += n
		}
	}
	return t
}

// A trace call's change: what it got when recorded against what it gets now.
const (
	unchanged = iota
	nowRejected
	nowAdmitted
)

func change(e traffic.Event, o engine.Outcome) int {
	wasThrough := e.Recorded != ratelimit.OutcomeRejected && e.Recorded != ratelimit.OutcomeInvalid && e.Recorded != ratelimit.OutcomeUnidentified && e.Recorded != "fail_closed"
	isThrough := o.Outcome == ratelimit.OutcomeAllowed || o.Outcome == ratelimit.OutcomeShadowRejected
	switch {
	case wasThrough && !isThrough:
		return nowRejected
	case !wasThrough && isThrough:
		return nowAdmitted
	}
	return unchanged
}

// Busiest returns up to n users with the most calls (ties by name).
func Busiest(users []UserRow, n int) []UserRow {
	s := slices.Clone(users)
	slices.SortStableFunc(s, func(a, b UserRow) int { return cmp.Compare(b.Requests, a.Requests) })
	return s[:min(n, len(s))]
}

func userLabel(u string) string {
	if u == "" {
		return "(anonymous)"
	}
	return u
}

func timeline(users []UserRow, tr *traffic.Traffic, res *engine.Result) (Timeline, []Levels) {
	bin := max((tr.Duration+Bins-1)/Bins, time.Microsecond).Round(time.Microsecond)
	if bin*Bins < tr.Duration {
		bin += time.Microsecond
	}
	tl := Timeline{Bin: bin, BinMicros: bin.Microseconds()}
	top := Busiest(users, chartUsers)
	index := map[string]int{}
	levelled := map[string]bool{}
	tl.Series = append(tl.Series, newSeries("all"))
	for k, u := range top {
		levelled[u.User] = k < levelUsers
		index[u.User] = len(tl.Series)
		tl.Series = append(tl.Series, newSeries(userLabel(u.User)))
	}
	others := -1
	if len(users) > len(top) {
		others = len(tl.Series)
		tl.Series = append(tl.Series, newSeries("others"))
	}
	levels := map[string]*Levels{}
	var levelOrder []string
	for i, e := range tr.Events {
		b := min(int(e.At/bin), Bins-1)
		o := res.Outcomes[i]
		n := int64(len(e.Calls))
		idx, ok := index[e.User]
		if !ok {
			idx = others
		}
		for _, si := range []int{0, idx} {
			if si < 0 {
				continue
			}
			if o.Allowed {
				tl.Series[si].Admitted[b] += n
			} else {
				tl.Series[si].Rejected[b] += n
			}
		}
		for _, st := range o.Buckets {
			name, ok := levelName(st, e.User, levelled)
			if !ok {
				continue
			}
			l := levels[name]
			if l == nil {
				l = &Levels{Bucket: name, MaxTokens: st.MaxTokens, Remaining: make([]int64, Bins)}
				for k := range l.Remaining {
					l.Remaining[k] = -1
				}
				levels[name] = l
				levelOrder = append(levelOrder, name)
			}
			if l.Remaining[b] < 0 || st.Remaining < l.Remaining[b] {
				l.Remaining[b] = st.Remaining
			}
		}
	}
	slices.Sort(levelOrder)
	var ls []Levels
	for _, name := range levelOrder {
		ls = append(ls, *levels[name])
	}
	return tl, ls
}

// levelName names the bucket series a state belongs to: every shared bucket, and the
// per-user buckets of the busiest users.
func levelName(st ratelimit.BucketState, user string, levelled map[string]bool) (string, bool) {
	if st.Scope == ratelimit.ScopeShared {
		return st.String(), true
	}
	if !levelled[user] || user == "" {
		return "", false
	}
	return st.String() + " of " + user, true
}

func newSeries(label string) Series {
	return Series{Label: label, Admitted: make([]int64, Bins), Rejected: make([]int64, Bins)}
}
