// Package engine replays calls through Tollgate's real limiter (proxy/ratelimit: the same
// Lua script, the same keys) on an embedded miniredis whose clock is virtual: before each
// call the engine sets Redis TIME to the call's instant, so a day of traffic replays in
// seconds and every run of the same calls makes the same decisions. Several replicas are
// several limiters sharing the one Redis. The script runs in an in-process Lua host on
// miniredis's data (lua.go says why and how), or, on request, by miniredis's own EVAL.
// Outcomes are handed to an Observer as they are decided, not kept. The limiters run as the
// proxy's do: with a deny cache (on the virtual clock) unless told otherwise, and through a
// scenario's Redis outages, in which every script call fails, with the failure policy applied
// as the proxy applies it (ratelimit.ApplyFailurePolicy; each replica's own local buckets for
// failurePolicy Local).
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
	"errors"
	"fmt"
	"iter"
	"slices"
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

// LimiterFunc builds one replica's limiter. opts are the engine's (the deny cache and its
// virtual clock): a LimiterFunc passes them on to ratelimit.New.
type LimiterFunc func(client redis.Scripter, namespace, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (Decider, error)

// RealLimiter is the default LimiterFunc: ratelimit.New.
func RealLimiter(client redis.Scripter, namespace, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (Decider, error) {
	return ratelimit.New(client, namespace, name, cfg, opts...)
}

// LocalFunc builds one replica's local buckets for failurePolicy Local: what decides while
// Redis is down. replicas is the scenario's; now is the virtual clock.
type LocalFunc func(namespace, name string, cfg *v1alpha1.RateLimitConfig, replicas int, now func() time.Time) (ratelimit.BatchDecider, error)

// RealLocal is the default LocalFunc, the proxy's: a limiter over an in-process
// ratelimit.LocalStore with every shared bucket divided among the replicas
// (ratelimit.DividedConfig). Each replica has its own.
func RealLocal(namespace, name string, cfg *v1alpha1.RateLimitConfig, replicas int, now func() time.Time) (ratelimit.BatchDecider, error) {
	return ratelimit.New(ratelimit.NewLocalStore(ratelimit.LocalOptions{Now: now}), namespace, name,
		ratelimit.DividedConfig(cfg, int32(max(replicas, 1))))
}

// Outage is a span of virtual time, [From, To), in which every script call to Redis fails.
type Outage struct{ From, To time.Duration }

// InOutage reports whether virtual time t is in one of outages (sorted, apart). Calls come
// in time order, so next is where the search starts, moved on as outages end.
func InOutage(outages []Outage, next *int, t time.Duration) bool {
	for *next < len(outages) && t >= outages[*next].To {
		*next++
	}
	return *next < len(outages) && t >= outages[*next].From
}

// Options configure a run.
type Options struct {
	Namespace, Name string
	Config          *v1alpha1.RateLimitConfig
	Replicas        int       // default 1
	Epoch           time.Time // virtual time zero
	// Observe peeks at every bucket a decision's script calls name, right before the first
	// call that names it and, when the decision is not admitted, right after the decision,
	// at the same virtual time: what rejectionChangesNoBucket judges.
	Observe bool
	// NewLimiter defaults to RealLimiter.
	NewLimiter LimiterFunc
	// NoDenyCache runs the limiters without their deny cache (ratelimit.WithDenyCache), which
	// they have by default, as the proxy has: every decision asks Redis. The denyCacheExact
	// property replays both ways.
	NoDenyCache bool
	// Outages are the spans in which Redis is down (sorted, apart): every script call fails,
	// and Config's failurePolicy answers (ratelimit.ApplyFailurePolicy, as the proxy does).
	Outages []Outage
	// NewLocal builds each replica's local buckets for failurePolicy Local; default
	// RealLocal.
	NewLocal LocalFunc
	// Model decides every call with the reference model (package model) instead of the
	// limiter on miniredis: much faster, the same decisions, but nothing to observe in Redis
	// (no Peeks, no KeyStats, no script calls). NewLimiter, Observe and Redis are ignored.
	Model bool
	// MiniredisEval runs the limiter's script with miniredis's own EVAL, over a connection
	// per replica, instead of in this process (luaRedis): a fresh Lua state for every call,
	// several times slower. The two give the same decisions (TestLuaHostsAgree); this one is
	// the baseline of BenchmarkEngine and of that test.
	MiniredisEval bool
	// Progress, when set, is told now and then how many events of a replay are decided, of
	// Total (0 when unknown).
	Progress func(done, total int)
	Total    int
	// Redis is the embedded Redis to run on (flushed, its clock set per call, ClockTTL
	// turned off: the engine expires keys); nil starts one for the session.
	Redis *miniredis.Miniredis
}

// Observer is handed every event's outcome as it is decided, in event order (i counts from
// 0). A replay keeps no outcome itself: whatever needs them (property checks, the report)
// observes them as they come, so that a run's memory does not grow with its length.
type Observer func(i int, ev traffic.Event, o Outcome)

// Outcome is what happened to one event.
type Outcome struct {
	// Outcome is what became of the call (ratelimit.ApplyFailurePolicy: the verdict under
	// the mode and the failure policy).
	Outcome ratelimit.Outcome
	// Allowed is the limiter's verdict: the cost was taken (from the local buckets when
	// Degraded). In shadow mode a call can pass (ratelimit.OutcomeShadowRejected) without
	// being allowed, and with failurePolicy Allow one passes while Redis is down
	// (ratelimit.OutcomeFailOpen).
	Allowed bool
	// Degraded: Redis was down and the replica's local buckets decided (failurePolicy Local).
	Degraded bool
	// Cached: the deny cache refused the call without asking Redis (Decision.Local).
	Cached bool
	// Invalid is a call no wait admits (ratelimit.ErrInvalidRequest): refused, or passed in
	// shadow mode.
	Invalid    bool
	RetryAfter time.Duration
	Rejected   *ratelimit.BucketID
	// Buckets are the limiter's bucket states, as Decision.Buckets.
	Buckets []ratelimit.BucketState
	// Peeks are the observed levels, before and after the decision, of every key its script
	// calls named (the first call's keys are Buckets, in the same order), for a decision that
	// was not admitted; nil otherwise.
	Peeks   []Peek
	Replica int
	// Time is Redis's clock as the limiter reported it; zero when it made no script call.
	Time time.Time
}

// Admitted reports whether the call went through to the upstream by a limiting decision:
// allowed by Redis or the local buckets, or let through by failurePolicy Allow while Redis
// was down. Shadow mode's would-be rejections are not admissions.
func (o Outcome) Admitted() bool { return o.Allowed || o.Outcome == ratelimit.OutcomeFailOpen }

// Peek is one bucket's effective level, in token-microseconds (tokens × refill period in
// µs), read from Redis without changing it, right before and right after a decision.
type Peek struct {
	Key string
	// Bucket names the bucket for people: "shared", "user of \"ann\"" (a BucketID and the
	// user); the key itself when the decision's answer does not name it.
	Bucket    string
	MaxTokens int64
	PeriodUS  int64
	// Before and After are effective levels. Unsized: the script call's arguments did not
	// give the bucket's size (a faulty limiter's own call), so the stored values RawBefore
	// and RawAfter are compared instead.
	Before, After       int64
	Unsized             bool
	RawBefore, RawAfter string
}

// Changed reports whether the decision changed the bucket: its effective level (or, for a
// key whose size is unknown, its stored value).
func (p Peek) Changed() bool {
	if p.Unsized {
		return p.RawBefore != p.RawAfter
	}
	return p.Before != p.After
}

// Result is what a replay leaves beside its outcomes.
type Result struct {
	// Outcomes are kept only by Run and RunEach (one per event); Stream and Session.Replay
	// hand them to an Observer instead.
	Outcomes []Outcome
	// Events counts the events decided.
	Events int
	// ScriptCalls counts the limiter's script runs (EVALSHA, or EVAL once per connection).
	ScriptCalls int
	Keys        KeyStats
}

// KeyStats describes the keyspace over the run.
type KeyStats struct {
	Peak    int `json:"peak"`    // most keys alive at once
	Final   int `json:"final"`   // alive at the end
	Expired int `json:"expired"` // deleted when their TTL ran out
}

// Run replays events (sorted by time) and returns one Outcome per event: for tests and
// small runs. Big runs use Stream.
func Run(ctx context.Context, opts Options, events []traffic.Event) (*Result, error) {
	res, err := RunEach(ctx, opts, [][]traffic.Event{events})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// RunEach replays each group of events as its own run, from empty Redis and time zero, and
// keeps every outcome.
func RunEach(ctx context.Context, opts Options, groups [][]traffic.Event) ([]*Result, error) {
	s, err := NewSession(opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	out := make([]*Result, len(groups))
	for g, events := range groups {
		outs := make([]Outcome, 0, len(events))
		res, err := s.Replay(ctx, slices.Values(events), func(_ int, _ traffic.Event, o Outcome) { outs = append(outs, o) })
		if err != nil {
			return nil, err
		}
		res.Outcomes = outs
		out[g] = res
	}
	return out, nil
}

// Stream replays events (in time order) and hands each outcome to observe.
func Stream(ctx context.Context, opts Options, events iter.Seq[traffic.Event], observe Observer) (*Result, error) {
	s, err := NewSession(opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Replay(ctx, events, observe)
}

// Session is an engine ready to replay: an embedded Redis with the replicas' limiters (or
// the reference model). Each Replay starts from empty Redis at virtual time zero, so one
// session serves many replays of one config (isolation replays every user alone).
type Session struct {
	opts    Options
	mr      *miniredis.Miniredis
	rec     *recorder
	clients []redis.Scripter // each replica's connection, tapped
	closers []func()
}

// NewSession starts an engine for opts.
func NewSession(opts Options) (*Session, error) {
	if opts.Epoch.IsZero() {
		opts.Epoch = traffic.DefaultEpoch
	}
	s := &Session{opts: opts}
	if opts.Model {
		return s, nil
	}
	if err := s.start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// start brings up Redis, the Lua host and one limiter per replica.
func (s *Session) start() error {
	s.mr = s.opts.Redis
	if s.mr == nil {
		s.mr = miniredis.NewMiniRedis()
		if err := s.mr.Start(); err != nil {
			return fmt.Errorf("starting embedded Redis: %w", err)
		}
		s.closers = append(s.closers, s.mr.Close)
	}
	// The engine expires keys itself (see the package comment); miniredis must not age them.
	s.mr.ClockTTL(false)
	s.rec = &recorder{mr: s.mr, observe: s.opts.Observe}
	if !s.opts.MiniredisEval {
		host, err := newLuaRedis(s.mr)
		if err != nil {
			return err
		}
		s.rec.host = host
		s.closers = append(s.closers, host.close)
	}
	s.clients = make([]redis.Scripter, max(s.opts.Replicas, 1))
	for i := range s.clients {
		var client redis.Scripter = s.rec.host
		if s.rec.host == nil {
			// One connection per replica, no retries (the script is not idempotent), and no
			// timeouts that a slow -race run could trip.
			c := redis.NewClient(&redis.Options{Addr: s.mr.Addr(), MaxRetries: -1, PoolSize: 1, ReadTimeout: -1, WriteTimeout: -1})
			s.closers = append(s.closers, func() { _ = c.Close() })
			client = c
		}
		s.clients[i] = &tap{Scripter: client, rec: s.rec}
	}
	// Built once to refuse a bad config (or a failing LimiterFunc) before any replay.
	_, _, err := s.replicas()
	return err
}

// replicas builds each replica's limiter and, for failurePolicy Local with outages, its
// local buckets: afresh for every replay, since a deny cache and local buckets hold state
// that a replay from time zero must not inherit.
func (s *Session) replicas() ([]Decider, []ratelimit.BatchDecider, error) {
	newLimiter := s.opts.NewLimiter
	if newLimiter == nil {
		newLimiter = RealLimiter
	}
	var opts []ratelimit.Option
	if !s.opts.NoDenyCache {
		opts = append(opts, ratelimit.WithDenyCache(ratelimit.DefaultDenyCacheEntries), ratelimit.WithClock(s.rec.now))
	}
	limiters := make([]Decider, len(s.clients))
	locals := make([]ratelimit.BatchDecider, len(s.clients))
	local := len(s.opts.Outages) > 0 && s.opts.Config != nil && s.opts.Config.FailurePolicy == v1alpha1.FailurePolicyLocal
	newLocal := s.opts.NewLocal
	if newLocal == nil {
		newLocal = RealLocal
	}
	for i, c := range s.clients {
		l, err := newLimiter(c, s.opts.Namespace, s.opts.Name, s.opts.Config, opts...)
		if err != nil {
			return nil, nil, err
		}
		limiters[i] = l
		if local {
			if locals[i], err = newLocal(s.opts.Namespace, s.opts.Name, s.opts.Config, len(s.clients), s.rec.now); err != nil {
				return nil, nil, fmt.Errorf("failurePolicy Local: %w", err)
			}
		}
	}
	return limiters, locals, nil
}

// Close stops what the session started.
func (s *Session) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Replay decides events (in time order) from empty Redis at virtual time zero, handing each
// outcome to observe (which may be nil).
func (s *Session) Replay(ctx context.Context, events iter.Seq[traffic.Event], observe Observer) (*Result, error) {
	if observe == nil {
		observe = func(int, traffic.Event, Outcome) {}
	}
	if s.opts.Model {
		return replayModel(ctx, s.opts, events, observe)
	}
	s.mr.FlushAll()
	s.rec.calls, s.rec.expiring, s.rec.nowUS = 0, newExpiryQueue(), s.opts.Epoch.UnixMicro()
	replicas, locals, err := s.replicas()
	if err != nil {
		return nil, err
	}
	return replay(ctx, s.opts, s.mr, s.rec, replicas, locals, events, observe)
}

func replay(ctx context.Context, opts Options, mr *miniredis.Miniredis, rec *recorder, replicas []Decider, locals []ratelimit.BatchDecider, events iter.Seq[traffic.Event], observe Observer) (*Result, error) {
	res := &Result{}
	reqs := make([]ratelimit.Request, 0, 1)
	i, outage := 0, 0
	for ev := range events {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if opts.Progress != nil {
				opts.Progress(i, opts.Total)
			}
		}
		now := opts.Epoch.Add(ev.At)
		mr.SetTime(now)
		rec.nowUS = now.UnixMicro()
		rec.expiring.advance(mr, rec.nowUS)
		rec.down = InOutage(opts.Outages, &outage, ev.At)
		reqs = reqs[:0]
		for _, c := range ev.Calls {
			reqs = append(reqs, ratelimit.Request{Method: c.Method, Name: c.Name, UserID: ev.User, Cost: c.Cost, Tier: ev.Tier})
		}
		out, err := decide(ctx, opts, rec, replicas[i%len(replicas)], locals[i%len(replicas)], reqs, ev)
		if err != nil {
			return nil, fmt.Errorf("call %d (+%s, user %q): %w", i, ev.At, ev.User, err)
		}
		out.Replica = i % len(replicas)
		observe(i, ev, out)
		i++
	}
	if opts.Progress != nil {
		opts.Progress(i, opts.Total)
	}
	res.Events = i
	res.ScriptCalls = rec.calls
	res.Keys = rec.expiring.stats()
	return res, nil
}

// decide asks one replica's limiter about one event and, when Redis is down, applies the
// failure policy as the proxy does (local: the replica's local buckets, nil unless
// failurePolicy Local).
func decide(ctx context.Context, opts Options, rec *recorder, l Decider, local ratelimit.BatchDecider, reqs []ratelimit.Request, ev traffic.Event) (Outcome, error) {
	var out Outcome
	if ev.User == "" && l.PerUserApplies(reqs) {
		// The proxy answers 401 without deciding: an anonymous call never gets around a
		// per-user limit.
		out.Outcome = ratelimit.OutcomeUnidentified
		return out, nil
	}
	rec.reset()
	d, err := l.AllowAll(ctx, reqs)
	if ratelimit.StoreFailed(err) && !rec.down {
		return out, err // not a simulated outage: the replay is broken
	}
	a := ratelimit.ApplyFailurePolicy(ctx, local, reqs, opts.Config, d, err)
	d = a.Decision
	verdict, _ := ratelimit.Verdict(d, a.Err) // "" for a store failure nothing local decided
	out.Outcome, out.Degraded, out.Cached = a.Outcome, a.Degraded, d.Local
	out.Allowed, out.Invalid = verdict == ratelimit.OutcomeAllowed, verdict == ratelimit.OutcomeInvalid
	out.RetryAfter, out.Buckets, out.Time = d.RetryAfter, d.Buckets, d.Time
	if d.Rejected != nil {
		id := d.Rejected.BucketID
		out.Rejected = &id
	}
	if !out.Allowed && rec.observed {
		out.Peeks = namePeeks(rec.finish(), out.Buckets, ev.User)
	}
	return out, nil
}

// tap is a replica's Redis connection as the limiter sees it: it passes script calls on,
// counting them, noting each written key's expiry, and peeking at the buckets around them.
type tap struct {
	redis.Scripter
	rec *recorder
}

func (t *tap) EvalSha(ctx context.Context, sha string, keys []string, args ...interface{}) *redis.Cmd {
	if t.rec.down {
		return outageCmd(ctx)
	}
	keys = t.rec.intern(keys)
	return t.rec.around(keys, args, func() *redis.Cmd { return t.Scripter.EvalSha(ctx, sha, keys, args...) })
}

func (t *tap) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	if t.rec.down {
		return outageCmd(ctx)
	}
	keys = t.rec.intern(keys)
	return t.rec.around(keys, args, func() *redis.Cmd { return t.Scripter.Eval(ctx, script, keys, args...) })
}

// ErrOutage is every script call's error while a scenario's Redis is down: a network
// failure, not a Redis reply (go-redis's Script.Run falls back to EVAL only on NOSCRIPT).
var ErrOutage = errors.New("simulated outage: Redis does not answer")

func outageCmd(ctx context.Context) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(ErrOutage)
	return cmd
}

// recorder is shared by the replicas' taps; the engine runs one call at a time.
type recorder struct {
	mr      *miniredis.Miniredis
	host    *luaRedis // nil with MiniredisEval
	observe bool
	nowUS   int64
	// down: Redis is down at nowUS (a scenario's fault): every script call fails.
	down  bool
	calls int
	// The keys alive, each with its expiry.
	expiring *expiryQueue
	// The current decision's peeks, in the order its script calls named the keys, with the
	// stored values read before (observed is false until a script call succeeded). Levels
	// are computed only for a refused decision: most decisions are admitted.
	peeks    []Peek
	before   []stored
	observed bool
	// keys is the current script call's keys, interned.
	keys []string
}

// intern returns a script call's keys with each live key spelled by the string that Redis
// and the expiry queue already hold for it. The limiter builds a fresh string for every
// per-user key of every call; kept as they come, Redis's maps would hold the newest and the
// expiry heap an older one of the same key: two copies of each of 100 000 users' keys. The
// slice is the recorder's, valid until the next call (the engine runs one at a time).
func (r *recorder) intern(keys []string) []string {
	r.keys = r.keys[:0]
	for _, k := range keys {
		if e, ok := r.expiring.alive[k]; ok {
			k = e.key
		}
		r.keys = append(r.keys, k)
	}
	return r.keys
}

// stored is a key's value as read from Redis; found false when there is none.
type stored struct {
	raw   string
	found bool
}

// now is virtual time, the clock of the deny cache and of the local buckets.
func (r *recorder) now() time.Time { return time.UnixMicro(r.nowUS).UTC() }

func (r *recorder) reset() { r.peeks, r.before, r.observed = r.peeks[:0], r.before[:0], false }

// around runs one script call. Before it runs, every key it names that no earlier call of
// the same decision named is peeked at; after the decision (which may make more calls, in a
// faulty limiter) finish peeks at them all again. Peeks read the stored strings directly
// from miniredis (no command, so no side effect and no clock tick) at the call's virtual
// time.
func (r *recorder) around(keys []string, args []interface{}, call func() *redis.Cmd) *redis.Cmd {
	if r.observe {
		r.peekBefore(keys, args)
	}
	cmd := call()
	res, err := ratelimit.ScriptReply(cmd)
	if err != nil || len(res) < 2 {
		return cmd // NOSCRIPT (go-redis retries with EVAL) or a failure the limiter reports
	}
	r.calls++
	r.observed = r.observe
	r.track(keys, res[0] == 1)
	return cmd
}

// track notes the expiry of the keys a script call wrote. In process, the Lua host says
// which keys a write command named (whatever the script, also a faulty one that writes on a
// rejection). Through miniredis's EVAL nothing says so, and the limiter's script writes
// every key of an admitted call and none of a rejected one. ClockTTL is off, so the TTL
// miniredis holds is exactly the one just set.
func (r *recorder) track(keys []string, admitted bool) {
	switch {
	case r.host != nil:
		keys = r.host.Written()
	case !admitted:
		return
	}
	for _, k := range keys {
		switch ttl := r.mr.TTL(k); {
		case ttl > 0:
			r.expiring.set(k, r.nowUS+ttl.Microseconds())
		case r.mr.Exists(k):
			r.expiring.set(k, 0) // written without a TTL: never expires
		default:
			r.expiring.gone(k)
		}
	}
}

// peekBefore reads the keys of a script call that the decision has not named yet. The
// script's arguments are three integers per key (maxTokens, refill period, cost): they give
// the bucket's size, without which only the stored value can be compared.
func (r *recorder) peekBefore(keys []string, args []interface{}) {
	a, sized := ratelimit.ReadScriptArgs(args, len(keys))
	for i, k := range keys {
		if r.peeked(k) {
			continue
		}
		p := Peek{Key: k, Bucket: k, Unsized: !sized}
		if sized {
			p.MaxTokens, p.PeriodUS = a[3*i], a[3*i+1]
		}
		r.peeks = append(r.peeks, p)
		r.before = append(r.before, r.read(k))
	}
}

func (r *recorder) peeked(key string) bool {
	for _, p := range r.peeks {
		if p.Key == key {
			return true
		}
	}
	return false
}

// finish reads the keys again after a refused decision, at the same virtual time as before
// it, and returns the peeks with both levels.
func (r *recorder) finish() []Peek {
	out := slices.Clone(r.peeks)
	for i := range out {
		b, a := r.before[i], r.read(out[i].Key)
		out[i].RawBefore, out[i].RawAfter = b.raw, a.raw
		if !out[i].Unsized {
			out[i].Before, out[i].After = r.level(out[i], b), r.level(out[i], a)
		}
	}
	return out
}

func (r *recorder) read(key string) stored {
	raw, err := r.mr.Get(key)
	return stored{raw, err == nil}
}

// level is a bucket's effective level now (ratelimit.StoredLevel of its stored value).
func (r *recorder) level(p Peek, v stored) int64 {
	return ratelimit.StoredLevel(v.raw, v.found, p.MaxTokens, p.PeriodUS, r.nowUS)
}

// namePeeks names the peeked buckets that the decision's answer lists: the first script
// call's keys are the decision's buckets, in the same order.
func namePeeks(peeks []Peek, buckets []ratelimit.BucketState, user string) []Peek {
	for i := range min(len(peeks), len(buckets)) {
		peeks[i].Bucket = buckets[i].String()
		if buckets[i].Scope == ratelimit.ScopePerUser {
			peeks[i].Bucket += fmt.Sprintf(" of %q", user)
		}
	}
	return peeks
}

// expiryQueue knows the keys alive and deletes each when virtual time reaches its TTL: a
// min-heap of (expiry, key) with at most one entry per key. A key written again keeps its
// entry; when the entry comes due and the key's expiry has moved on, it goes back in at the
// new time. A heap entry per write instead (with lazy removal) held every rewrite of a key
// until its old expiry: several entries per key, the shared keys' thousands a second.
type expiryQueue struct {
	items   expiryHeap
	alive   map[string]expiry
	peak    int
	expired int
}

// expiry is a live key's: when it expires (0: never), when its heap entry is due (0: none),
// and the key itself: the one string of it that everything keeps (recorder.intern).
type expiry struct {
	at, queued int64
	key        string
}

func newExpiryQueue() *expiryQueue { return &expiryQueue{alive: map[string]expiry{}} }

// set records that key is alive until atUS (0: for good).
func (q *expiryQueue) set(key string, atUS int64) {
	e, ok := q.alive[key]
	if !ok {
		e.key = key
	}
	e.at = atUS
	// An entry due earlier is enough (advance moves it on); a later one is not: the key's
	// TTL was shortened, and the old entry, now stale, is skipped when it comes.
	if atUS > 0 && (e.queued == 0 || atUS < e.queued) {
		e.queued = atUS
		heap.Push(&q.items, expiryItem{atUS, e.key})
	}
	q.alive[e.key] = e
	q.peak = max(q.peak, len(q.alive))
}

// gone records that a script deleted key.
func (q *expiryQueue) gone(key string) { delete(q.alive, key) }

func (q *expiryQueue) advance(mr *miniredis.Miniredis, nowUS int64) {
	for len(q.items) > 0 && q.items[0].at <= nowUS {
		it := heap.Pop(&q.items).(expiryItem)
		e, ok := q.alive[it.key]
		if !ok || e.queued != it.at {
			continue // deleted, or a stale entry
		}
		switch {
		case e.at == 0: // written since without a TTL
			e.queued = 0
			q.alive[it.key] = e
		case e.at <= nowUS:
			mr.Del(it.key)
			delete(q.alive, it.key)
			q.expired++
		default: // written since with a later expiry
			e.queued = e.at
			q.alive[it.key] = e
			heap.Push(&q.items, expiryItem{e.at, it.key})
		}
	}
}

func (q *expiryQueue) stats() KeyStats {
	return KeyStats{Peak: q.peak, Final: len(q.alive), Expired: q.expired}
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
