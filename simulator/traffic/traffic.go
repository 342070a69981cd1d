// Package traffic turns a scenario's generators and trace into one list of calls in
// virtual-time order. Everything is derived from the scenario and a seed, so the same pair
// always gives the same calls.
package traffic

import (
	"fmt"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"

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
	At    time.Duration // since the start of the run, in whole microseconds (Redis TIME's unit)
	User  string        // "" for an anonymous caller
	Calls []Call
	// Source is the generator's index in the scenario's traffic, or -1 for the trace.
	Source int
	// Recorded is the decision the trace recorded for this call ("" for generated calls).
	Recorded ratelimit.Outcome
}

// SourceTrace is the Source of events read from the trace.
const SourceTrace = -1

// Traffic is a scenario's calls.
type Traffic struct {
	Events []Event
	// Duration is the scenario's duration, or the trace's span when the scenario sets none.
	Duration time.Duration
	// Epoch is the wall time the run starts at: the trace's first record, else a fixed date.
	Epoch time.Time
	// TraceSkipped counts trace records that are not replayed: methods the limiter never
	// limits (initialize, ping, ...) and records beyond the duration.
	TraceSkipped int
}

// DefaultEpoch is virtual time zero of a run without a trace.
var DefaultEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Generate returns the scenario's calls, sorted by time: generated calls in generator, user
// and arrival order at equal times, then the trace's in its order.
func Generate(s *scenario.Scenario, seed uint64) (*Traffic, error) {
	t := &Traffic{Duration: s.Duration.Duration, Epoch: DefaultEpoch}
	var trace []Event
	if s.Trace != "" {
		tr, err := ReadTrace(s.TracePath())
		if err != nil {
			return nil, err
		}
		trace, t.TraceSkipped = tr.Events, tr.Skipped
		if len(tr.Events) > 0 {
			t.Epoch = tr.Epoch
		}
		if t.Duration == 0 {
			t.Duration = (tr.Span/time.Second + 1) * time.Second
		}
	}
	var events []Event
	for i := range s.Traffic {
		var err error
		events, err = generate(events, s, i, seed, t.Duration)
		if err != nil {
			return nil, err
		}
	}
	for _, e := range trace {
		if e.At >= t.Duration {
			t.TraceSkipped++
			continue
		}
		events = append(events, e)
	}
	if len(events) > MaxEvents {
		return nil, s.Errorf("traffic", "%d calls: more than the %d a scenario may make", len(events), MaxEvents)
	}
	// Stable: calls at one instant keep the order above, so the replay is deterministic.
	slices.SortStableFunc(events, byTime)
	t.Events = events
	return t, nil
}

// generate appends the calls of generator i.
func generate(out []Event, s *scenario.Scenario, i int, seed uint64, duration time.Duration) ([]Event, error) {
	g := &s.Traffic[i]
	start := g.Start.Microseconds()
	end := duration.Microseconds()
	if g.End != nil {
		end = g.End.Microseconds()
	}
	calls := make([]Call, g.Batch)
	for k := range calls {
		calls[k] = Call{Method: g.Method, Name: g.Name, Cost: g.Cost}
	}
	users := g.GeneratorUsers()
	n := uint64(len(users))
	count, per := uint64(g.Rate.Count), uint64(g.Rate.Per.Microseconds())
	if n := expected(g, end-start) * float64(len(users)); n > MaxEvents {
		return nil, s.Errorf(fmt.Sprintf("traffic[%d]", i), "about %.0f calls: more than the %d a scenario may make (lower the rate, the population or the duration)", n, MaxEvents)
	}
	var jitter *rand.Rand
	emit := func(at int64, user string) error {
		if jitter != nil {
			at += jitter.Int64N(g.Jitter.Microseconds())
			if at >= end {
				return nil
			}
		}
		if len(out) >= MaxEvents {
			return s.Errorf(fmt.Sprintf("traffic[%d]", i), "more than %d calls: lower the rate, the population or the duration", MaxEvents)
		}
		out = append(out, Event{At: time.Duration(at) * time.Microsecond, User: user, Calls: calls, Source: i})
		return nil
	}
	for j, user := range users {
		if g.Jitter.Microseconds() > 0 {
			// Its own stream, so that adding jitter does not change Poisson arrivals.
			jitter = rand.New(rand.NewPCG(seed^jitterSalt, uint64(i)<<32|uint64(j)))
		}
		switch g.Pattern {
		case scenario.PatternConstant:
			// Evenly spaced at the rate; the users of a population are spread evenly over
			// one interval, so that a constant population is smooth (a herd is a burst).
			phase := int64(mulDiv(uint64(j), per, count*n))
			for k := uint64(0); ; k++ {
				at := start + phase + int64(mulDiv(k, per, count))
				if at >= end {
					break
				}
				if err := emit(at, user); err != nil {
					return nil, err
				}
			}
		case scenario.PatternBurst:
			// Rate.Count calls at once, every Rate.Per, every user at the same instant.
			for at := start; at < end; at += int64(per) {
				for range count {
					if err := emit(at, user); err != nil {
						return nil, err
					}
				}
			}
		case scenario.PatternPoisson:
			// Exponential gaps with the rate's mean, from a generator drawn from the seed,
			// the generator and the user: adding a user does not change the others' calls.
			rng := rand.New(rand.NewPCG(seed, uint64(i)<<32|uint64(j)))
			mean := float64(per) / float64(count)
			at := float64(start)
			for {
				at += rng.ExpFloat64() * mean
				if at >= float64(end) {
					break
				}
				if err := emit(int64(at), user); err != nil {
					return nil, err
				}
			}
		case scenario.PatternRamp:
			// The rate moves linearly from From to Rate over [start, end); the k-th call is
			// where the integral of the rate reaches k (plus the user's share of one call,
			// to spread a population): N(t) = r0 t + (r1 - r0) t² / 2T.
			var r0 float64
			if g.From != nil {
				r0 = float64(g.From.Count) / float64(g.From.Per.Microseconds())
			}
			r1 := float64(count) / float64(per)
			span := float64(end - start)
			a := (r1 - r0) / (2 * span)
			for k := 0; ; k++ {
				m := float64(k) + float64(j)/float64(n)
				var dt float64
				if m > 0 {
					disc := r0*r0 + 4*a*m
					if disc < 0 {
						break
					}
					den := r0 + math.Sqrt(disc)
					if den <= 0 {
						break
					}
					// 2m / (b + √(b² + 4am)) is the root of a t² + b t = m without the
					// cancellation of the textbook formula, and also right when a = 0.
					dt = 2 * m / den
				}
				// Rounded to the nearest µs, so that the call where the integral reaches a
				// whole number exactly at the end is not let in by a rounding error.
				at := start + int64(math.Round(dt))
				if at >= end {
					break
				}
				if err := emit(at, user); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
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
