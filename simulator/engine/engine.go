// Package engine replays calls through Tollgate's real limiter (proxy/ratelimit: the same
// Lua script, the same keys) on an embedded miniredis whose clock is virtual: before each
// call the engine sets Redis TIME to the call's instant, so a day of traffic replays in
// seconds and every run of the same calls makes the same decisions. Several replicas are
// several limiters, each with its own connection, sharing the one Redis.
//
// Key expiry is exact and cheap: the engine reads each written key's TTL and deletes the key
// once virtual time passes it, instead of letting miniredis age every key on every command
// (ClockTTL and FastForward walk and sort the whole keyspace each time; with 10 000 users
// that is most of the run). Coarse FastForward steps would be cheaper still but wrong: they
// age a key written just before a step by the whole step, expiring it early, and an early
// expiry turns a nearly full bucket into a full one.
package engine

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Decider is what the engine needs of a limiter; *ratelimit.Limiter is one. Tests wrap it to
// inject faults and show that the property checks catch them.
type Decider interface {
	AllowAll(ctx context.Context, reqs []ratelimit.Request) (ratelimit.Decision, error)
	PerUserApplies(reqs []ratelimit.Request) bool
}

// LimiterFunc builds one replica's limiter.
type LimiterFunc func(client redis.Scripter, namespace, name string, cfg *v1alpha1.RateLimitConfig) (Decider, error)

// RealLimiter is the default LimiterFunc: ratelimit.New.
func RealLimiter(client redis.Scripter, namespace, name string, cfg *v1alpha1.RateLimitConfig) (Decider, error) {
	return ratelimit.New(client, namespace, name, cfg)
}

// Options configure a run.
type Options struct {
	Namespace, Name string
	Config          *v1alpha1.RateLimitConfig
	Replicas        int       // default 1
	Epoch           time.Time // virtual time zero
	// Observe peeks at every bucket of a call right before it and, when it is rejected,
	// right after it, at the same virtual time: what perUserRejectionNeverDrainsShared judges.
	Observe bool
	// NewLimiter defaults to RealLimiter.
	NewLimiter LimiterFunc
	// Model decides every call with the reference model (package model) instead of the
	// limiter on miniredis: much faster, the same decisions, but nothing to observe in Redis
	// (no Peeks, no KeyStats, no script calls). NewLimiter, Observe and Redis are ignored.
	Model bool
	// Progress, when set, is told now and then how many events of a run are decided.
	Progress func(done, total int)
	// Redis is the embedded Redis to run on (flushed, its clock set per call, ClockTTL
	// turned off: the engine expires keys); nil starts one for the run.
	Redis *miniredis.Miniredis
}

// Outcome is what happened to one event.
type Outcome struct {
	// Outcome is what became of the call (ratelimit.OutcomeOf: the verdict under the mode).
	Outcome ratelimit.Outcome
	// Allowed is the limiter's verdict: the cost was taken. In shadow mode a call can pass
	// (ratelimit.OutcomeShadowRejected) without being allowed.
	Allowed bool
	// Invalid is a call no wait admits (ratelimit.ErrInvalidRequest): refused, or passed in
	// shadow mode.
	Invalid    bool
	RetryAfter time.Duration
	Rejected   *ratelimit.BucketID
	// Buckets are the limiter's bucket states, as Decision.Buckets.
	Buckets []ratelimit.BucketState
	// Peeks are the observed levels of Buckets (same order) around a rejection; nil otherwise.
	Peeks   []Peek
	Replica int
	// Time is Redis's clock as the limiter reported it; zero when it made no script call.
	Time time.Time
}

// Peek is one bucket's effective level, in token-microseconds (tokens × refill period in
// µs), read from Redis without changing it, right before and right after a call.
type Peek struct {
	Key           string
	MaxTokens     int64
	PeriodUS      int64
	Before, After int64
}

// Result is a run's outcomes, one per event, and what Redis held.
type Result struct {
	Outcomes []Outcome
	// ScriptCalls counts the limiter's script runs (EVALSHA, or EVAL once per connection).
	ScriptCalls int
	Keys        KeyStats
}

// KeyStats describes the keyspace over the run.
type KeyStats struct {
	Peak    int // most keys alive at once
	Final   int // alive at the end
	Expired int // deleted when their TTL ran out
}

// Run replays events (sorted by time) and returns one Outcome per event.
func Run(ctx context.Context, opts Options, events []traffic.Event) (*Result, error) {
	res, err := RunEach(ctx, opts, [][]traffic.Event{events})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// RunEach replays each group of events as its own run, from empty Redis and time zero, on
// one embedded Redis: the isolation property replays every user alone.
func RunEach(ctx context.Context, opts Options, groups [][]traffic.Event) ([]*Result, error) {
	if opts.Epoch.IsZero() {
		opts.Epoch = traffic.DefaultEpoch
	}
	if opts.Model {
		out := make([]*Result, len(groups))
		for g, events := range groups {
			res, err := runModel(ctx, opts, events)
			if err != nil {
				return nil, err
			}
			out[g] = res
		}
		return out, nil
	}
	mr := opts.Redis
	if mr == nil {
		mr = miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return nil, fmt.Errorf("starting embedded Redis: %w", err)
		}
		defer mr.Close()
	}
	// The engine expires keys itself (see the package comment); miniredis must not age them.
	mr.ClockTTL(false)
	newLimiter := opts.NewLimiter
	if newLimiter == nil {
		newLimiter = RealLimiter
	}
	rec := &recorder{mr: mr, observe: opts.Observe}
	replicas := make([]Decider, max(opts.Replicas, 1))
	for i := range replicas {
		// One connection per replica, no retries (the script is not idempotent), and no
		// timeouts that a slow -race run could trip.
		c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, PoolSize: 1, ReadTimeout: -1, WriteTimeout: -1})
		defer func() { _ = c.Close() }()
		l, err := newLimiter(&tap{Scripter: c, rec: rec}, opts.Namespace, opts.Name, opts.Config)
		if err != nil {
			return nil, err
		}
		replicas[i] = l
	}
	out := make([]*Result, len(groups))
	for g, events := range groups {
		mr.FlushAll()
		rec.calls, rec.expiring = 0, &expiryQueue{latest: map[string]int64{}}
		res, err := replay(ctx, opts, mr, rec, replicas, events)
		if err != nil {
			return nil, err
		}
		out[g] = res
	}
	return out, nil
}

func replay(ctx context.Context, opts Options, mr *miniredis.Miniredis, rec *recorder, replicas []Decider, events []traffic.Event) (*Result, error) {
	res := &Result{Outcomes: make([]Outcome, len(events))}
	reqs := make([]ratelimit.Request, 0, 1)
	for i, ev := range events {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if opts.Progress != nil && i%256 == 0 {
			opts.Progress(i, len(events))
		}
		now := opts.Epoch.Add(ev.At)
		mr.SetTime(now)
		rec.nowUS = now.UnixMicro()
		rec.expiring.advance(mr, rec.nowUS)
		reqs = reqs[:0]
		for _, c := range ev.Calls {
			reqs = append(reqs, ratelimit.Request{Method: c.Method, Name: c.Name, UserID: ev.User, Cost: c.Cost})
		}
		replica := i % len(replicas)
		l := replicas[replica]
		out := Outcome{Replica: replica}
		if ev.User == "" && l.PerUserApplies(reqs) {
			// The proxy answers 401 without deciding: an anonymous call never gets around
			// a per-user limit.
			out.Outcome = ratelimit.OutcomeUnidentified
			res.Outcomes[i] = out
			continue
		}
		rec.reset()
		d, err := l.AllowAll(ctx, reqs)
		verdict, err := ratelimit.Verdict(d, err)
		if err != nil {
			return nil, fmt.Errorf("call %d (+%s, user %q): %w", i, ev.At, ev.User, err)
		}
		out.Outcome = verdict.Under(opts.Config)
		out.Allowed, out.Invalid = verdict == ratelimit.OutcomeAllowed, verdict == ratelimit.OutcomeInvalid
		out.RetryAfter, out.Buckets, out.Time = d.RetryAfter, d.Buckets, d.Time
		if d.Rejected != nil {
			id := d.Rejected.BucketID
			out.Rejected = &id
		}
		if err == nil && !d.Allowed && rec.observed {
			rec.finish()
			out.Peeks = rec.peeks
		}
		res.Outcomes[i] = out
	}
	if opts.Progress != nil {
		opts.Progress(len(events), len(events))
	}
	res.ScriptCalls = rec.calls
	res.Keys = KeyStats{Peak: rec.expiring.peak, Final: len(rec.expiring.latest), Expired: rec.expiring.expired}
	return res, nil
}

// tap is a replica's Redis connection as the limiter sees it: it passes script calls on,
// counting them, noting each written key's expiry, and peeking at the buckets around them.
type tap struct {
	redis.Scripter
	rec *recorder
}

func (t *tap) EvalSha(ctx context.Context, sha string, keys []string, args ...interface{}) *redis.Cmd {
	return t.rec.around(keys, args, func() *redis.Cmd { return t.Scripter.EvalSha(ctx, sha, keys, args...) })
}

func (t *tap) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	return t.rec.around(keys, args, func() *redis.Cmd { return t.Scripter.Eval(ctx, script, keys, args...) })
}

// recorder is shared by the replicas' taps; the engine runs one call at a time.
type recorder struct {
	mr       *miniredis.Miniredis
	observe  bool
	nowUS    int64
	calls    int
	expiring *expiryQueue
	// The current decision's peeks, from its first script call (observed is false until
	// a script call succeeded).
	peeks    []Peek
	observed bool
}

func (r *recorder) reset() { r.peeks, r.observed = nil, false }

// around runs one script call. The first call of a decision records its buckets' levels
// before it runs; after the decision (which may make more calls, in a faulty limiter)
// finish records them again. Peeks read the stored strings directly from miniredis (no
// command, so no side effect and no clock tick) at the call's virtual time.
func (r *recorder) around(keys []string, args []interface{}, call func() *redis.Cmd) *redis.Cmd {
	if r.observe && r.peeks == nil && len(args) == 3*len(keys) {
		r.peeks = make([]Peek, len(keys))
		for i, k := range keys {
			r.peeks[i] = Peek{Key: k, MaxTokens: toInt64(args[3*i]), PeriodUS: toInt64(args[3*i+1])}
			r.peeks[i].Before = r.level(r.peeks[i])
		}
	}
	cmd := call()
	res, err := cmd.Int64Slice()
	if err != nil || len(res) < 2 {
		return cmd // NOSCRIPT (go-redis retries with EVAL) or a failure the limiter reports
	}
	r.calls++
	r.observed = r.peeks != nil
	if res[0] == 1 {
		// Admitted: the script wrote every key with a TTL. ClockTTL is off, so the TTL
		// miniredis holds is exactly the one just set.
		for _, k := range keys {
			if ttl := r.mr.TTL(k); ttl > 0 {
				r.expiring.add(k, r.nowUS+ttl.Microseconds())
			}
		}
	}
	return cmd
}

// finish records the levels after a decision, at the same virtual time as before it.
func (r *recorder) finish() {
	for i := range r.peeks {
		r.peeks[i].After = r.level(r.peeks[i])
	}
}

// level is the effective level of a bucket now (ratelimit.StoredLevel of its stored value).
func (r *recorder) level(p Peek) int64 {
	raw, err := r.mr.Get(p.Key)
	return ratelimit.StoredLevel(raw, err == nil, p.MaxTokens, p.PeriodUS, r.nowUS)
}

func toInt64(v interface{}) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case int32:
		return int64(x)
	}
	n, _ := strconv.ParseInt(fmt.Sprint(v), 10, 64)
	return n
}

// expiryQueue deletes keys when virtual time reaches their TTL: a min-heap of (expiry, key)
// with lazy removal (a key written again gets a new entry; the old one is skipped).
type expiryQueue struct {
	items   expiryHeap
	latest  map[string]int64 // key → its current expiry
	peak    int
	expired int
}

func (q *expiryQueue) add(key string, atUS int64) {
	q.latest[key] = atUS
	heap.Push(&q.items, expiryItem{atUS, key})
	q.peak = max(q.peak, len(q.latest))
}

func (q *expiryQueue) advance(mr *miniredis.Miniredis, nowUS int64) {
	for len(q.items) > 0 && q.items[0].at <= nowUS {
		it := heap.Pop(&q.items).(expiryItem)
		if q.latest[it.key] == it.at {
			mr.Del(it.key)
			delete(q.latest, it.key)
			q.expired++
		}
	}
}

type expiryItem struct {
	at  int64
	key string
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
