// Package traffic turns a scenario's generators and trace into one list of calls in
// virtual-time order. Everything is derived from the scenario and a seed, so the same pair
// always gives the same calls.
package traffic

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
)

// MaxEvents bounds one scenario's calls, so that a typo (10/ms for 10 000 users) is an error
// rather than a run that never ends.
const MaxEvents = 2_000_000

// Call is one limited MCP call.
type Call struct {
	Method string
	Name   string
	Cost   int32 // tokens asked, before the entry's weight; at least 1
}

// Event is what one client sends at one instant: a single call, or a JSON-RPC batch decided
// as one.
type Event struct {
	At   time.Duration // since the start of the run, in whole microseconds (Redis TIME's unit)
	User string        // "" for an anonymous caller
	// Tier is the caller's tier, decided with its buckets: the one the generator's claims
	// and headers resolve to, or the one the trace recorded; "" for none.
	Tier  string
	Calls []Call
	// Source is the generator's index in the scenario's traffic, or -1 for the trace.
	Source int
	// Recorded is the decision the trace recorded for this call ("" for generated calls).
	Recorded ratelimit.Outcome
	// UnknownTier is the tier the trace recorded when the config has no tier of that name:
	// the call is then decided with the default buckets (Tier is "").
	UnknownTier string
}

// SourceTrace is the Source of events read from the trace.
const SourceTrace = -1

// Traffic is a scenario's calls: not a list but a stream, regenerated in time order on
// demand from the scenario, the seed and the trace (read once), so that a million calls
// cost no more memory than ten. Every pass gives the same events in the same order.
type Traffic struct {
	// Duration is the scenario's duration, or the trace's span when the scenario sets none.
	Duration time.Duration
	// Epoch is the wall time the run starts at: the trace's first record, else a fixed date.
	Epoch time.Time
	// TraceSkipped counts trace records that are not replayed: methods the limiter never
	// limits (initialize, ping, ...) and records beyond the duration.
	TraceSkipped int
	// Count is the number of events: decisions, a batch being one.
	Count int
	// Requests counts each user's calls (a batch of n is n; "" for the anonymous callers),
	// known before any replay: the report charts the busiest users.
	Requests map[string]int64
	// UnknownTiers counts, per tier name, the trace's calls recorded in a tier the config
	// does not have: they are decided with the default buckets (the proxy would resolve
	// those callers afresh; a trace holds the tier, not the claims it came from).
	UnknownTiers map[string]int64

	list  []Event            // traffic given as a list (FromEvents)
	s     *scenario.Scenario // the scenario it is generated from; nil for a list
	seed  uint64
	users [][]string // each generator's users
	tmpls []Event    // each generator's event: its calls and source
	trace []Event    // the trace's events within the duration, in time order
	// byUser indexes trace events by user, built when a user's calls are first asked for.
	byUser map[string][]int
}

// DefaultEpoch is virtual time zero of a run without a trace.
var DefaultEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Generate prepares the scenario's calls and counts them (a scenario with more than
// MaxEvents is an error), with one pass over the stream.
func Generate(s *scenario.Scenario, seed uint64) (*Traffic, error) {
	t := &Traffic{Duration: s.Duration.Duration, Epoch: DefaultEpoch, s: s, seed: seed, Requests: map[string]int64{}}
	if err := t.readTrace(); err != nil {
		return nil, err
	}
	names := map[scenario.Population][]string{} // generators of one population share its names
	for i := range s.Traffic {
		g := &s.Traffic[i]
		users := g.GeneratorUsers
		if g.Users != nil {
			if names[*g.Users] == nil {
				names[*g.Users] = g.GeneratorUsers()
			}
			users = func() []string { return names[*g.Users] }
		}
		t.users = append(t.users, users())
		calls := make([]Call, g.Batch)
		for k := range calls {
			calls[k] = Call{Method: g.Method, Name: g.Name, Cost: g.Cost}
		}
		t.tmpls = append(t.tmpls, Event{Calls: calls, Source: i, Tier: g.Tier})
		if n := expected(g, t.span(g)) * float64(len(t.users[i])); n > MaxEvents {
			return nil, s.Errorf(fmt.Sprintf("traffic[%d]", i), "about %.0f calls: more than the %d a scenario may make (lower the rate, the population or the duration)", n, MaxEvents)
		}
	}
	for e := range t.All() {
		if t.Count++; t.Count > MaxEvents {
			return nil, s.Errorf("traffic", "more than the %d calls a scenario may make: lower the rate, the population or the duration", MaxEvents)
		}
		t.Requests[e.User] += int64(len(e.Calls))
	}
	return t, nil
}

// FromEvents is traffic given as a list of events in time order (tests, doctored runs).
func FromEvents(duration time.Duration, epoch time.Time, events []Event) *Traffic {
	t := &Traffic{Duration: duration, Epoch: epoch, list: events, Count: len(events), Requests: map[string]int64{}}
	for _, e := range events {
		t.Requests[e.User] += int64(len(e.Calls))
	}
	return t
}

// readTrace reads the scenario's trace, keeping the records within the duration.
func (t *Traffic) readTrace() error {
	s := t.s
	if s.Trace == "" {
		return nil
	}
	tr, err := ReadTrace(s.TracePath())
	if err != nil {
		return traceError(s, err)
	}
	t.TraceSkipped = tr.Skipped
	if len(tr.Events) > 0 {
		t.Epoch = tr.Epoch
	}
	if t.Duration == 0 {
		t.Duration = (tr.Span/time.Second + 1) * time.Second
	}
	known := map[string]bool{}
	for _, tier := range s.RateLimiting.Tiers {
		known[tier.Name] = true
	}
	for _, e := range tr.Events {
		if e.At >= t.Duration {
			t.TraceSkipped++
			continue
		}
		if e.Tier != "" && !known[e.Tier] {
			if t.UnknownTiers == nil {
				t.UnknownTiers = map[string]int64{}
			}
			t.UnknownTiers[e.Tier] += int64(len(e.Calls))
			e.Tier, e.UnknownTier = "", e.Tier
		}
		t.trace = append(t.trace, e)
	}
	return nil
}

// traceError places an error reading the trace: at the record's line in the trace when it
// has one, else at the scenario's trace field (a file that cannot be read at all).
func traceError(s *scenario.Scenario, err error) error {
	var e *scenario.Error
	if errors.As(err, &e) && e.Line == 0 && e.File == s.TracePath() {
		return s.Errorf("trace", "%s: %s", e.File, e.Msg)
	}
	return err
}

// All is every event in time order: at one instant generated calls in generator, user and
// arrival order, then the trace's in its order.
func (t *Traffic) All() iter.Seq[Event] {
	if t.s == nil {
		return slices.Values(t.list)
	}
	return func(yield func(Event) bool) {
		var m merger
		for i := range t.s.Traffic {
			src := t.source(i, nil)
			m.add(src, len(src.at), i, src.index)
		}
		m.add(&listSource{events: t.trace}, 1, len(t.s.Traffic), func(int) int { return 0 })
		m.run(yield)
	}
}

// Of is the events of one user (or of the anonymous callers, for ""), in time order: the
// user's calls replayed alone.
func (t *Traffic) Of(user string) iter.Seq[Event] {
	if t.s == nil {
		return func(yield func(Event) bool) {
			for _, e := range t.list {
				if e.User == user && !yield(e) {
					return
				}
			}
		}
	}
	return func(yield func(Event) bool) {
		var m merger
		for i := range t.s.Traffic {
			if j, ok := t.userIndex(i, user); ok {
				src := t.source(i, []int32{int32(j)})
				m.add(src, 1, i, src.index)
			}
		}
		m.add(&listSource{events: t.trace, only: t.traceOf(user)}, 1, len(t.s.Traffic), func(int) int { return 0 })
		m.run(yield)
	}
}

// Resident is how many events the traffic holds in memory for the run (a trace's, or a
// list's); generated calls are made as they are replayed and not held.
func (t *Traffic) Resident() int { return len(t.list) + len(t.trace) }

// Events is every event in a list: for small runs and tests.
func (t *Traffic) Events() []Event { return slices.Collect(t.All()) }

// userIndex finds user among generator i's users.
func (t *Traffic) userIndex(i int, user string) (int, bool) {
	g := &t.s.Traffic[i]
	if g.Users == nil {
		return 0, t.users[i][0] == user
	}
	rest, ok := strings.CutPrefix(user, g.Users.Prefix)
	if !ok {
		return 0, false
	}
	j, err := strconv.Atoi(rest)
	if err != nil || j < 0 || j >= len(t.users[i]) || t.users[i][j] != user {
		return 0, false
	}
	return j, true
}

// traceOf lists the indexes of user's trace events.
func (t *Traffic) traceOf(user string) []int {
	if t.byUser == nil {
		t.byUser = map[string][]int{}
		for i, e := range t.trace {
			t.byUser[e.User] = append(t.byUser[e.User], i)
		}
	}
	if l := t.byUser[user]; l != nil {
		return l
	}
	return []int{}
}

// span is generator g's end minus its start, in µs.
func (t *Traffic) span(g *scenario.Generator) int64 {
	return t.end(g) - g.Start.Microseconds()
}

func (t *Traffic) end(g *scenario.Generator) int64 {
	if g.End != nil {
		return g.End.Microseconds()
	}
	return t.Duration.Microseconds()
}

// source is the events of generator i's users, of all of them or of the members listed
// (by index among the generator's users).
func (t *Traffic) source(i int, members []int32) *genSource {
	g := &t.s.Traffic[i]
	streams := len(t.users[i])
	if members != nil {
		streams = len(members)
	}
	src := &genSource{tmpl: t.tmpls[i], users: t.users[i], members: members, at: make([]time.Duration, streams)}
	src.arr = t.arrivals(i, src, streams)
	if span := g.Jitter.Microseconds(); span > 0 {
		// Its own random stream, so that adding jitter does not change Poisson arrivals.
		src.arr = &jittered{base: src.arr, span: span, end: t.end(g), streams: make([]jitterState, streams),
			rngs: newShared(streams, func(k int) (uint64, uint64) { return t.seed ^ jitterSalt, uint64(i)<<32 | uint64(src.index(k)) })}
	}
	return src
}

// arrivals are the arrival times, before jitter, of the users of generator i that src
// streams.
func (t *Traffic) arrivals(i int, src *genSource, streams int) arrivals {
	g := &t.s.Traffic[i]
	start, end := g.Start.Microseconds(), t.end(g)
	n := uint64(len(t.users[i]))
	count, per := uint64(g.Rate.Count), uint64(g.Rate.Per.Microseconds())
	switch g.Pattern {
	case scenario.PatternBurst:
		b := &burst{end: end, per: int64(per), count: count, at: make([]int64, streams), done: make([]uint64, streams)}
		for k := range b.at {
			b.at[k] = start
		}
		return b
	case scenario.PatternPoisson:
		// Exponential gaps with the rate's mean, from a generator drawn from the seed, the
		// generator and the user: adding a user does not change the others' calls.
		p := &poisson{mean: float64(per) / float64(count), end: float64(end), at: make([]float64, streams),
			rngs: newShared(streams, func(k int) (uint64, uint64) { return t.seed, uint64(i)<<32 | uint64(src.index(k)) })}
		for k := range p.at {
			p.at[k] = float64(start)
		}
		return p
	case scenario.PatternRamp:
		var r0 float64
		if g.From != nil {
			r0 = float64(g.From.Count) / float64(g.From.Per.Microseconds())
		}
		r1 := float64(count) / float64(per)
		r := &ramp{r0: r0, a: (r1 - r0) / (2 * float64(end-start)), start: start, end: end, share: make([]float64, streams), i: make([]int32, streams)}
		for k := range r.share {
			r.share[k] = float64(src.index(k)) / float64(n)
		}
		return r
	}
	// Evenly spaced at the rate; the users of a population are spread evenly over one
	// interval, so that a constant population is smooth (a herd is a burst).
	c := &constant{end: end, per: per, count: count, phase: make([]int64, streams), i: make([]uint64, streams)}
	for k := range c.phase {
		c.phase[k] = start + int64(mulDiv(uint64(src.index(k)), per, count*n))
	}
	return c
}

// expected is about how many calls one user of g makes in span µs: refused before any is
// generated when it is far too many.
func expected(g *scenario.Generator, span int64) float64 {
	r1 := float64(g.Rate.Count) / float64(g.Rate.Per.Microseconds())
	switch g.Pattern {
	case scenario.PatternBurst:
		return float64(g.Rate.Count) * (float64(span)/float64(g.Rate.Per.Microseconds()) + 1)
	case scenario.PatternRamp:
		var r0 float64
		if g.From != nil {
			r0 = float64(g.From.Count) / float64(g.From.Per.Microseconds())
		}
		return (r0+r1)/2*float64(span) + 1
	}
	return r1*float64(span) + 1
}

// jitterSalt separates the jitter's random stream from the Poisson one.
const jitterSalt = 0x6a09e667f3bcc908

// mulDiv is ⌊a × b / c⌋ without overflow (the product may exceed 64 bits).
func mulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi >= c {
		return math.MaxInt64 // beyond any end: the caller stops
	}
	q, _ := bits.Div64(hi, lo, c)
	return min(q, math.MaxInt64)
}
