package ratelimit

import (
	"container/list"
	"sync"
	"time"
)

// The deny cache refuses, without a round trip, a decision that Redis would refuse — and only
// such a decision.
//
// When Redis rejects, its answer carries each bucket's level at Redis's time of the decision,
// t_r. The proxy sent the call at t_s on its own clock, and t_r (in real time) is no earlier
// than t_s. Between t_r and any later moment t, a bucket's level can only rise by refill (other
// replicas only ever take tokens), at maxTokens per period: so at t it holds at most
//
//	L + maxTokens × (t − t_r) ≤ L + maxTokens × (t − t_s)
//
// where the right side is measured entirely on the proxy's clock: an offset between the
// proxy's clock and Redis's cannot make it refuse early. While that bound is below what a new
// call asks of the bucket, Redis would refuse the call too, and the cache refuses it locally,
// with the exact wait that bound gives. A rejected call writes nothing in Redis, so refusing it
// locally leaves Redis exactly as asking would have: the decisions with the cache are the
// decisions without it (TestDenyCacheExact, and the simulator's replay with the cache on and
// off).
//
// What it assumes: Redis's clock does not run ahead of real time (a failover to a server whose
// clock is ahead refills buckets early, and a cached bound would then be too low for at most
// its bucket's refill period). The cache belongs to one limiter: a config reload builds a new
// limiter, so a raised bucket is never judged by a stale entry.

// denyCache holds, per bucket key, an upper bound of its level. Bounded: the least recently
// used entries go first; an entry whose bound has reached the bucket's capacity is useless and
// dropped when met. Safe for concurrent use.
type denyCache struct {
	max int
	now func() time.Time
	// early makes a deliberately wrong cache for mutation tests (WithDenyCacheEarly): bounds
	// lowered by this many token-µs, so that it refuses too early. Always 0 outside tests.
	early int64

	mu      sync.Mutex
	entries map[string]*list.Element // key → *denyEntry
	order   list.List                // front: most recently used
}

type denyEntry struct {
	key                 string
	level               int64     // token-µs, at most, at sent
	sent                time.Time // the proxy's clock when the call that learned it was sent
	maxTokens, periodUS int64
}

func newDenyCache(max int, now func() time.Time) *denyCache {
	return &denyCache{max: max, now: now, entries: make(map[string]*list.Element, min(max, 1024))}
}

// bound is the entry's upper bound of the level at now.
func (e *denyEntry) bound(now time.Time) int64 {
	capacity := e.maxTokens * e.periodUS
	// Rounded up: Redis counts refill in whole microseconds of TIME, and between two of its
	// readings that can be up to a microsecond more than the real time elapsed.
	elapsed := (now.Sub(e.sent) + time.Microsecond - 1).Microseconds()
	if elapsed >= e.periodUS { // a whole period refills any level
		return capacity
	}
	return min(capacity, e.level+max(elapsed, 0)*e.maxTokens)
}

// refuse reports whether some bucket of uses is known to be short now, and then the decision
// to answer: a rejection with the exact wait the bounds give, naming the bucket with the
// largest wait, and the states of the buckets the cache knows.
func (c *denyCache) refuse(uses []use) (Decision, bool) {
	if len(c.entries) == 0 { // unlocked peek: a missed entry only costs a round trip
		return Decision{}, false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var d Decision
	for _, u := range uses {
		el, ok := c.entries[u.key]
		if !ok {
			continue
		}
		e := el.Value.(*denyEntry)
		if e.maxTokens != u.b.maxTokens || e.periodUS != u.b.periodUS {
			c.drop(el) // learned under another config
			continue
		}
		level := max(e.bound(now)-c.early, 0)
		if level >= e.maxTokens*e.periodUS {
			c.drop(el)
			continue
		}
		c.order.MoveToFront(el)
		s := BucketState{
			BucketID: u.b.id, MaxTokens: int32(u.b.maxTokens), RefillPeriod: time.Duration(u.b.periodUS) * time.Microsecond,
			Cost: u.cost, Remaining: level / u.b.periodUS,
			Reset:     ceilDiv(u.b.maxTokens*u.b.periodUS-level, u.b.maxTokens),
			NextToken: ceilDiv(u.b.periodUS-level%u.b.periodUS, u.b.maxTokens),
		}
		if need := u.cost*u.b.periodUS - level; need > 0 {
			s.Wait = ceilDiv(need, u.b.maxTokens)
		}
		d.Buckets = append(d.Buckets, s)
	}
	for i := range d.Buckets {
		if s := &d.Buckets[i]; s.Wait > d.RetryAfter {
			d.RetryAfter, d.Rejected = s.Wait, s
		}
	}
	if d.Rejected == nil {
		return Decision{}, false
	}
	d.Local, d.Time = true, now
	return d, true
}

// learn records the short buckets of a rejection Redis made for a call sent at sent.
func (c *denyCache) learn(d Decision, uses []use, sent time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range d.Buckets {
		if s.Wait == 0 {
			continue
		}
		u := uses[i]
		e := &denyEntry{key: u.key, level: s.level, sent: sent, maxTokens: u.b.maxTokens, periodUS: u.b.periodUS}
		if el, ok := c.entries[u.key]; ok {
			// Two bounds of one bucket: the lower is the better, both hold.
			if old := el.Value.(*denyEntry); old.maxTokens == e.maxTokens && old.periodUS == e.periodUS && old.bound(sent) <= e.level {
				c.order.MoveToFront(el)
				continue
			}
			el.Value = e
			c.order.MoveToFront(el)
			continue
		}
		c.entries[u.key] = c.order.PushFront(e)
		if c.order.Len() > c.max {
			c.drop(c.order.Back())
		}
	}
}

func (c *denyCache) drop(el *list.Element) {
	delete(c.entries, el.Value.(*denyEntry).key)
	c.order.Remove(el)
}

// Len is the number of entries, for metrics and tests.
func (c *denyCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
