package traffic

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/simulator/scenario"
)

// reference is the former Generate, which made every call and sorted them: the stream must
// give exactly its events, in its order.
func reference(t *testing.T, s *scenario.Scenario, seed uint64) []Event {
	t.Helper()
	tr, err := Generate(s, seed) // for the trace and the duration
	if err != nil {
		t.Fatal(err)
	}
	var events []Event
	for i := range s.Traffic {
		events, err = referenceGenerate(events, s, i, seed, tr.Duration)
		if err != nil {
			t.Fatal(err)
		}
	}
	events = append(events, tr.trace...)
	slices.SortStableFunc(events, func(a, b Event) int { return cmp.Compare(a.At, b.At) })
	return events
}

// referenceGenerate appends the calls of generator i.
func referenceGenerate(out []Event, s *scenario.Scenario, i int, seed uint64, duration time.Duration) ([]Event, error) {
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
		out = append(out, Event{At: time.Duration(at) * time.Microsecond, User: user, Tier: g.Tier, Calls: calls, Source: i})
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
