package traffic

import (
	"math"
	"math/rand/v2"
	"time"
)

// A source is a set of streams of events, each in time order: the users of one generator
// (stream k is the source's k-th user) or the trace (one stream). A generator's users share
// one source, their state in slices, so that 100 000 users cost a few bytes each, not an
// object, a random generator and a heap entry's worth of event each.
type source interface {
	// next moves stream k to its next event and says when it is; false when it has no more.
	next(k int) (time.Duration, bool)
	// event is the event stream k last moved to.
	event(k int) Event
}

// merger yields the events of many streams in time order; at one instant the stream added
// first goes first, and one stream's events keep their order: the order a stable sort of
// every stream's events, concatenated in the order the streams were added, would give.
type merger struct {
	heads []head // a min-heap by (at, order)
}

// head is a stream's next event: when, and the stream's rank (generator, then user).
type head struct {
	at    time.Duration
	order int
	src   source
	k     int
}

// add adds every stream of src, ranked after the streams added before.
func (m *merger) add(src source, streams int, generator int, user func(k int) int) {
	for k := range streams {
		at, ok := src.next(k)
		if !ok {
			continue
		}
		// Generators number at most a few hundred, users at most MaxPopulation: one int
		// orders them, generator first.
		m.heads = append(m.heads, head{at: at, order: generator<<32 | user(k), src: src, k: k})
		m.up(len(m.heads) - 1)
	}
}

func (m *merger) run(yield func(Event) bool) {
	for len(m.heads) > 0 {
		h := &m.heads[0]
		if !yield(h.src.event(h.k)) {
			return
		}
		if at, ok := h.src.next(h.k); ok {
			h.at = at
		} else {
			last := len(m.heads) - 1
			m.heads[0] = m.heads[last]
			m.heads = m.heads[:last]
		}
		m.down(0)
	}
}

func (m *merger) less(i, j int) bool {
	a, b := &m.heads[i], &m.heads[j]
	return a.at < b.at || (a.at == b.at && a.order < b.order)
}

func (m *merger) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !m.less(i, p) {
			return
		}
		m.heads[i], m.heads[p] = m.heads[p], m.heads[i]
		i = p
	}
}

func (m *merger) down(i int) {
	n := len(m.heads)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && m.less(r, l) {
			c = r
		}
		if !m.less(c, i) {
			return
		}
		m.heads[i], m.heads[c] = m.heads[c], m.heads[i]
		i = c
	}
}

// listSource is a list of events already in time order (the trace) as one stream: all of
// them or those at the indexes in only.
type listSource struct {
	events []Event
	only   []int // nil: every event
	i      int   // the current event's place, from 1
}

func (l *listSource) next(int) (time.Duration, bool) {
	if l.i >= len(l.events) || (l.only != nil && l.i >= len(l.only)) {
		return 0, false
	}
	l.i++
	return l.event(0).At, true
}

func (l *listSource) event(int) Event {
	if l.only != nil {
		return l.events[l.only[l.i-1]]
	}
	return l.events[l.i-1]
}

// genSource is one generator's users: the generator's event, from each user, at each of
// their arrivals.
type genSource struct {
	tmpl  Event
	users []string // the generator's users; stream k is users[index(k)]
	// members are the users of the generator this source streams (nil: all of them).
	members []int32
	arr     arrivals
	at      []time.Duration // each stream's current event time
}

func (g *genSource) index(k int) int {
	if g.members == nil {
		return k
	}
	return int(g.members[k])
}

func (g *genSource) next(k int) (time.Duration, bool) {
	at, ok := g.arr.next(k)
	g.at[k] = time.Duration(at) * time.Microsecond
	return g.at[k], ok
}

func (g *genSource) event(k int) Event {
	ev := g.tmpl
	ev.At, ev.User = g.at[k], g.users[g.index(k)]
	return ev
}

// arrivals are each stream's arrival times in µs, in order.
type arrivals interface {
	next(k int) (int64, bool)
}

// constant arrivals are evenly spaced: the i-th of stream k at phase[k] + ⌊i × per / count⌋.
type constant struct {
	end        int64
	per, count uint64
	phase      []int64
	i          []uint64
}

func (c *constant) next(k int) (int64, bool) {
	at := c.phase[k]
	off := mulDiv(c.i[k], c.per, c.count)
	if at >= c.end || off >= uint64(c.end-at) {
		return 0, false
	}
	c.i[k]++
	return at + int64(off), true
}

// burst arrivals are count at once, every per.
type burst struct {
	end, per int64
	count    uint64
	at       []int64
	done     []uint64
}

func (b *burst) next(k int) (int64, bool) {
	if b.at[k] >= b.end || b.count == 0 {
		return 0, false
	}
	at := b.at[k]
	if b.done[k]++; b.done[k] == b.count {
		b.done[k], b.at[k] = 0, b.at[k]+b.per
	}
	return at, true
}

// poisson arrivals have exponential gaps of the given mean, each stream from its own
// random generator.
type poisson struct {
	mean, end float64
	at        []float64
	rngs      *shared
}

func (p *poisson) next(k int) (int64, bool) {
	p.at[k] += p.rngs.of(k).ExpFloat64() * p.mean
	if p.at[k] >= p.end {
		return 0, false
	}
	return int64(p.at[k]), true
}

// ramp arrivals follow a rate moving linearly from r0 (per µs) over [start, end): the i-th
// of stream k is where the integral of the rate reaches i plus the stream's share of one
// call (to spread a population): N(t) = r0 t + a t², a = (r1 - r0) / 2T.
type ramp struct {
	r0, a      float64
	start, end int64
	share      []float64
	i          []int32 // -1 once done
}

func (r *ramp) next(k int) (int64, bool) {
	if r.i[k] < 0 {
		return 0, false
	}
	m := float64(r.i[k]) + r.share[k]
	r.i[k]++
	var dt float64
	if m > 0 {
		disc := r.r0*r.r0 + 4*r.a*m
		den := r.r0 + math.Sqrt(disc)
		if disc < 0 || den <= 0 {
			r.i[k] = -1
			return 0, false
		}
		// 2m / (b + √(b² + 4am)) is the root of a t² + b t = m without the cancellation of
		// the textbook formula, and also right when a = 0.
		dt = 2 * m / den
	}
	// Rounded to the nearest µs, so that the call where the integral reaches a whole
	// number exactly at the end is not let in by a rounding error.
	at := r.start + int64(math.Round(dt))
	if at >= r.end {
		r.i[k] = -1
		return 0, false
	}
	return at, true
}

// jittered delays each arrival by a random amount in [0, span), dropping those pushed to the
// end or beyond, and yields them in time order (at one instant, in arrival order): it holds
// the delayed arrivals until no later arrival can come before them.
type jittered struct {
	base      arrivals
	span, end int64
	rngs      *shared
	streams   []jitterState
}

type jitterState struct {
	nextAt  int64 // the base's next arrival, not yet delayed
	more    bool
	started bool
	pending []delayed // a min-heap by (at, seq)
	seq     int
}

type delayed struct {
	at  int64
	seq int
}

func (j *jittered) next(k int) (int64, bool) {
	s := &j.streams[k]
	if !s.started {
		s.nextAt, s.more = j.base.next(k)
		s.started = true
	}
	for {
		// Every later arrival is delayed from at least nextAt: the earliest pending one
		// that is not after it goes first (and before one delayed to the same instant).
		if len(s.pending) > 0 && (!s.more || s.pending[0].at <= s.nextAt) {
			return s.pop(), true
		}
		if !s.more {
			return 0, false
		}
		at := s.nextAt + j.rngs.of(k).Int64N(j.span)
		s.nextAt, s.more = j.base.next(k)
		if at < j.end {
			s.push(delayed{at, s.seq})
			s.seq++
		}
	}
}

func earlier(a, b delayed) bool { return a.at < b.at || (a.at == b.at && a.seq < b.seq) }

func (s *jitterState) push(d delayed) {
	s.pending = append(s.pending, d)
	for i := len(s.pending) - 1; i > 0; {
		p := (i - 1) / 2
		if !earlier(s.pending[i], s.pending[p]) {
			break
		}
		s.pending[i], s.pending[p] = s.pending[p], s.pending[i]
		i = p
	}
}

func (s *jitterState) pop() int64 {
	top := s.pending[0].at
	last := len(s.pending) - 1
	s.pending[0] = s.pending[last]
	s.pending = s.pending[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(s.pending) {
			break
		}
		c := l
		if r := l + 1; r < len(s.pending) && earlier(s.pending[r], s.pending[l]) {
			c = r
		}
		if !earlier(s.pending[c], s.pending[i]) {
			break
		}
		s.pending[i], s.pending[c] = s.pending[c], s.pending[i]
		i = c
	}
	return top
}

// shared is one random generator per stream, kept as bare PCG states (16 bytes each) and
// drawn from through one rand.Rand whose source is pointed at the stream's state: the same
// numbers as a rand.Rand per stream, without one per stream.
type shared struct {
	pcgs []rand.PCG
	ref  pcgRef
	rng  *rand.Rand
}

// newShared seeds one PCG per stream with seed(k).
func newShared(streams int, seed func(k int) (uint64, uint64)) *shared {
	s := &shared{pcgs: make([]rand.PCG, streams)}
	for k := range s.pcgs {
		s.pcgs[k].Seed(seed(k))
	}
	s.rng = rand.New(&s.ref)
	return s
}

func (s *shared) of(k int) *rand.Rand {
	s.ref.p = &s.pcgs[k]
	return s.rng
}

// pcgRef is a rand.Source drawing from the PCG state it points at.
type pcgRef struct{ p *rand.PCG }

func (r *pcgRef) Uint64() uint64 { return r.p.Uint64() }
