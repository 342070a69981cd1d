// Package report turns runs into what people read: a terminal summary, JSON for tools, and
// a self-contained HTML page with SVG charts. Everything in a report derives from the
// scenario, the seed and the decisions (no wall-clock time), so the same run gives the same
// bytes.
package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// EngineModel is Scenario.Engine of a run decided by the reference model.
const EngineModel = "model"

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
	// Engine is EngineModel for a run decided by the reference model (--engine model);
	// empty for the real limiter on Redis.
	Engine   string `json:"engine,omitempty"`
	Duration string `json:"duration"`
	// Outages are the scenario's faults, when it has some, and FailurePolicy the policy
	// that answered them (Allow, Deny or Local).
	Outages       []Outage        `json:"outages,omitempty"`
	FailurePolicy string          `json:"failurePolicy,omitempty"`
	Epoch         time.Time       `json:"epoch"`
	Events        int             `json:"events"`
	ScriptCalls   int             `json:"scriptCalls"`
	Keys          engine.KeyStats `json:"keys"`
	Totals        check.Tally     `json:"totals"`
	Users         []UserRow       `json:"users"`
	Names         []NameRow       `json:"names"`
	// Tiers are the calls per tier, when the config or the trace has tiers ("-": no tier).
	Tiers     []TierRow      `json:"tiers,omitempty"`
	MoreTiers int            `json:"moreTiers,omitempty"`
	Trace     *Trace         `json:"trace,omitempty"`
	Checks    []check.Result `json:"checks"`
	Timeline  Timeline       `json:"timeline"`
	Levels    []Levels       `json:"levels,omitempty"`
}

// Decided says how the calls were decided, and by what: the real limiter's script calls to
// Redis and the keys it kept there, or the reference model, which asks no Redis. A run whose
// calls never reached the script (no bucket applied, or every call was refused before it)
// says so rather than list Redis statistics that are all zero.
func (s *Scenario) Decided() string {
	calls := fmt.Sprintf("%d calls in %d decisions", s.Totals.Requests, s.Events)
	switch {
	case s.Engine == EngineModel:
		return calls + ", all by the reference model (--engine model): no Redis, no keys"
	case s.ScriptCalls == 0:
		return calls + ", none of which reached the limiter's script: Redis never asked, no keys"
	}
	return fmt.Sprintf("%s, %d script calls to Redis; Redis keys peak %d, expired %d, %d at the end",
		calls, s.ScriptCalls, s.Keys.Peak, s.Keys.Expired, s.Keys.Final)
}

// Outage is a span in which Redis was down, written as in a scenario (10s, 1m30s).
type Outage struct {
	From  string        `json:"from"`
	To    string        `json:"to"`
	Start time.Duration `json:"-"`
	End   time.Duration `json:"-"`
}

// OutageLine says when Redis was down and what the failure policy made of the calls then,
// "" without outages: "Redis down [+10s, +20s) (failurePolicy Allow): 200 fail_open".
func (s *Scenario) OutageLine() string {
	if len(s.Outages) == 0 {
		return ""
	}
	spans := make([]string, len(s.Outages))
	for i, o := range s.Outages {
		spans[i] = fmt.Sprintf("[+%s, +%s)", o.From, o.To)
	}
	line := fmt.Sprintf("Redis down %s (failurePolicy %s)", strings.Join(spans, ", "), s.FailurePolicy)
	if what := s.Totals.Outage(); what != "" {
		return line + ": " + what
	}
	return line + ": no call needed it"
}

// UserRow is one user's calls; User "" is the anonymous callers.
type UserRow struct {
	User string `json:"user"`
	// Tier is the tier the user's calls were decided in, when the run has tiers: "pro", "-"
	// for none, or several ("-, gold") for a user who changed tier.
	Tier string `json:"tier,omitempty"`
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
	// UnknownTiers counts, per tier, the calls recorded in a tier the config does not have:
	// they were decided with the default buckets.
	UnknownTiers map[string]int64 `json:"unknownTiers,omitempty"`
}

// Warning is what the reports say about the trace's calls in unknown tiers, or "".
func (t *Trace) Warning() string { return unknownTiers(t.UnknownTiers) }

// Timeline is calls per time bin, admitted and not, in total and for the busiest users.
type Timeline struct {
	Bin       time.Duration `json:"-"`
	BinMicros int64         `json:"binMicros"` // the width of a bin
	// Span is the run's duration: the bins cover it (the last one may end a little after).
	Span   time.Duration `json:"-"`
	Series []Series      `json:"series"`
}

// Series is one line of the timeline.
type Series struct {
	Label    string  `json:"label"`
	Admitted []int64 `json:"admitted"`
	Rejected []int64 `json:"rejected"` // every call not admitted (shadow rejections included)
}

// Levels is a bucket's lowest level per time bin after the decisions in it, in tokens with
// their fraction (to the thousandth): a bucket between 0 and 1 is not empty. -1: no decision
// touched the bucket in that bin.
type Levels struct {
	Bucket    string    `json:"bucket"`
	MaxTokens int32     `json:"maxTokens"`
	Remaining []float64 `json:"remaining"`
}

// Builder assembles a scenario's report from its run as the outcomes come: totals, users,
// tools, the trace's what-if, the timeline and the bucket levels. It keeps a tally per user
// and per tool and the 60 bins of the charts, not the outcomes.
type Builder struct {
	s     *scenario.Scenario
	seed  uint64
	tr    *traffic.Traffic
	out   *Scenario
	users map[string]check.Tally
	names map[nameKey]check.Tally
	trace *Trace
	chart *charts
	tiers *tierTally // nil when the run has no tiers
}

type nameKey struct{ method, name string }

// NewBuilder starts the report of a run of s with seed over tr.
func NewBuilder(s *scenario.Scenario, seed uint64, tr *traffic.Traffic) *Builder {
	mode := string(s.RateLimiting.Mode)
	if mode == "" {
		mode = "Enforce"
	}
	b := &Builder{s: s, seed: seed, tr: tr, users: map[string]check.Tally{}, names: map[nameKey]check.Tally{}}
	b.out = &Scenario{
		Name: s.Name, Description: strings.TrimSpace(s.Description), File: s.File, Seed: seed,
		Server: s.Server.Namespace + "/" + s.Server.Name, Mode: mode, Replicas: s.Replicas,
		Duration: HumanDuration(tr.Duration), Epoch: tr.Epoch.UTC(), OK: true,
	}
	if s.Trace != "" {
		b.trace = &Trace{File: s.Trace, Skipped: tr.TraceSkipped, UnknownTiers: tr.UnknownTiers}
	}
	if len(s.RateLimiting.Tiers) > 0 || len(tr.UnknownTiers) > 0 {
		b.tiers = newTierTally()
	}
	for _, w := range s.Outages() {
		b.out.Outages = append(b.out.Outages, Outage{From: HumanDuration(w.From.Duration), To: HumanDuration(w.To.Duration), Start: w.From.Duration, End: w.To.Duration})
	}
	if len(b.out.Outages) > 0 {
		b.out.FailurePolicy = string(cmp.Or(s.RateLimiting.FailurePolicy, v1alpha1.FailurePolicyAllow))
	}
	b.chart = newCharts(tr)
	return b
}

// Observe counts one event's outcome.
func (b *Builder) Observe(ev traffic.Event, o engine.Outcome) {
	b.out.Events++
	n := int64(len(ev.Calls))
	b.out.Totals.Add(o, n)
	count(b.users, ev.User, o, n)
	for _, c := range ev.Calls {
		count(b.names, nameKey{c.Method, c.Name}, o, 1)
	}
	if b.trace != nil && ev.Source == traffic.SourceTrace {
		b.trace.add(ev, o)
	}
	if b.tiers != nil {
		b.tiers.add(ev, o)
	}
	b.chart.add(ev, o)
}

// count adds n calls with outcome o to k's tally (tallies are kept by value: one map entry
// a user, no object).
func count[K comparable](m map[K]check.Tally, k K, o engine.Outcome, n int64) {
	t := m[k]
	t.Add(o, n)
	m[k] = t
}

// Finish completes the report with what the replay left (script calls, keys) and the
// properties' verdicts.
func (b *Builder) Finish(res *engine.Result, checks []check.Result) *Scenario {
	out := b.out
	out.ScriptCalls, out.Keys, out.Checks = res.ScriptCalls, res.Keys, checks
	for _, c := range checks {
		out.OK = out.OK && c.OK
	}
	for u, t := range b.users {
		row := UserRow{User: u, Tally: t}
		if b.tiers != nil {
			row.Tier = b.tiers.of(u)
		}
		out.Users = append(out.Users, row)
	}
	if b.tiers != nil {
		out.Tiers, out.MoreTiers = b.tiers.rows()
	}
	slices.SortFunc(out.Users, func(a, b UserRow) int { return cmp.Compare(a.User, b.User) })
	for k, t := range b.names {
		out.Names = append(out.Names, NameRow{Method: k.method, Name: k.name, Tally: t})
	}
	slices.SortFunc(out.Names, func(a, b NameRow) int { return cmp.Or(cmp.Compare(a.Method, b.Method), cmp.Compare(a.Name, b.Name)) })
	out.Trace = b.trace
	out.Timeline, out.Levels = b.chart.finish()
	return out
}

// Build is the report of a run given as lists: the events of tr and one outcome each in
// res (tests, doctored runs).
func Build(s *scenario.Scenario, seed uint64, tr *traffic.Traffic, res *engine.Result, checks []check.Result) *Scenario {
	b := NewBuilder(s, seed, tr)
	i := 0
	for ev := range tr.All() {
		b.Observe(ev, res.Outcomes[i])
		i++
	}
	return b.Finish(res, checks)
}

// add counts a trace call's change: what it got when recorded against what it gets now.
func (t *Trace) add(ev traffic.Event, o engine.Outcome) {
	n := int64(len(ev.Calls))
	t.Replayed += len(ev.Calls)
	switch change(ev, o) {
	case nowRejected:
		t.NowRejected += n
	case nowAdmitted:
		t.NowAdmitted += n
	}
}

// A trace call's change: what it got when recorded against what it gets now.
const (
	unchanged = iota
	nowRejected
	nowAdmitted
)

func change(e traffic.Event, o engine.Outcome) int {
	wasThrough := e.Recorded != ratelimit.OutcomeRejected && e.Recorded != ratelimit.OutcomeInvalid && e.Recorded != ratelimit.OutcomeUnidentified && e.Recorded != "fail_closed"
	isThrough := o.Outcome.Admits()
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

// charts are the timeline and the bucket levels being built: calls per bin in all, for the
// busiest users (by calls asked, known before the run) and for the others; the lowest level
// per bin of every shared bucket and of the busiest users' buckets.
type charts struct {
	tl         Timeline
	index      map[string]int // a busiest user's series
	others     int            // the others' series; -1 when there are none
	levelled   map[string]bool
	levels     map[string]*Levels
	levelOrder []string
}

func newCharts(tr *traffic.Traffic) *charts {
	bin := max((tr.Duration+Bins-1)/Bins, time.Microsecond).Round(time.Microsecond)
	if bin*Bins < tr.Duration {
		bin += time.Microsecond
	}
	c := &charts{tl: Timeline{Bin: bin, BinMicros: bin.Microseconds(), Span: tr.Duration}, index: map[string]int{},
		others: -1, levelled: map[string]bool{}, levels: map[string]*Levels{}}
	users := make([]UserRow, 0, len(tr.Requests))
	for u, n := range tr.Requests {
		users = append(users, UserRow{User: u, Tally: check.Tally{Requests: n}})
	}
	slices.SortFunc(users, func(a, b UserRow) int { return cmp.Compare(a.User, b.User) })
	top := Busiest(users, chartUsers)
	c.tl.Series = append(c.tl.Series, newSeries("all"))
	for k, u := range top {
		c.levelled[u.User] = k < levelUsers
		c.index[u.User] = len(c.tl.Series)
		c.tl.Series = append(c.tl.Series, newSeries(userLabel(u.User)))
	}
	if len(users) > len(top) {
		c.others = len(c.tl.Series)
		c.tl.Series = append(c.tl.Series, newSeries("others"))
	}
	return c
}

func (c *charts) add(ev traffic.Event, o engine.Outcome) {
	b := min(int(ev.At/c.tl.Bin), Bins-1)
	n := int64(len(ev.Calls))
	idx, ok := c.index[ev.User]
	if !ok {
		idx = c.others
	}
	for _, si := range []int{0, idx} {
		switch {
		case si < 0:
		case o.Admitted():
			c.tl.Series[si].Admitted[b] += n
		default:
			c.tl.Series[si].Rejected[b] += n
		}
	}
	for _, st := range o.Buckets {
		name, ok := levelName(st, ev.User, c.levelled)
		if !ok {
			continue
		}
		l := c.levels[name]
		if l == nil {
			l = &Levels{Bucket: name, MaxTokens: st.MaxTokens, Remaining: make([]float64, Bins)}
			for k := range l.Remaining {
				l.Remaining[k] = -1
			}
			c.levels[name] = l
			c.levelOrder = append(c.levelOrder, name)
		}
		if lv := tokensLeft(st); l.Remaining[b] < 0 || lv < l.Remaining[b] {
			l.Remaining[b] = lv
		}
	}
}

func (c *charts) finish() (Timeline, []Levels) {
	slices.Sort(c.levelOrder)
	var ls []Levels
	for _, name := range c.levelOrder {
		ls = append(ls, *c.levels[name])
	}
	return c.tl, ls
}

// tokensLeft is a bucket's level after a decision in tokens, with the fraction: from the
// time until it is full again (Reset, rounded up to the µs, so the level is at most one µs
// of refill low), to the thousandth. The whole tokens alone (Remaining) would draw a bucket
// between 0 and 1 token as empty.
func tokensLeft(st ratelimit.BucketState) float64 {
	if st.RefillPeriod <= 0 {
		return float64(st.Remaining)
	}
	missing := float64(st.MaxTokens) * float64(st.Reset) / float64(st.RefillPeriod)
	return math.Max(0, math.Round((float64(st.MaxTokens)-missing)*1000)/1000)
}

// HumanDuration writes a duration as people write one: 20s, 2m, 1h30m, 7d, 1d12h; below a
// second as Go does (333.334ms).
func HumanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day {
		days := fmt.Sprintf("%dd", d/day)
		if rest := d % day; rest > 0 {
			return days + HumanDuration(rest)
		}
		return days
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
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
