// Package ratelimit is Tollgate's limiter: token buckets in Redis, checked and taken by one
// Lua script call per decision. The proxy enforces with it and the simulator replays traffic
// through it, so both run the same script on the same keys.
package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

//go:embed tokenbucket.lua
var scriptSource string

// script is shared by every Limiter: go-redis sends EVALSHA and falls back to EVAL once per
// server when the script is not loaded yet.
var script = redis.NewScript(scriptSource)

// Request is one limited MCP call.
type Request struct {
	Method string // MethodToolsCall, MethodPromptsGet or MethodResourcesRead
	Name   string // tool or prompt name (exact), or resource URI (matched canonicalised: CanonicalResourceURI)
	UserID string // "" = anonymous: per-user buckets do not apply
	Cost   int32  // tokens the call takes; 0 means 1. Multiplied by the entry's configured cost.
	// Tier is the caller's tier (ResolveTier), "" for none: its per-user buckets replace the
	// default ones. A tier the config does not name is a *RequestError.
	Tier string
}

// Scope says whether a bucket is shared by all callers or kept per user.
type Scope string

const (
	ScopeShared  Scope = "shared"
	ScopePerUser Scope = "perUser"
)

// BucketID names a configured bucket: its scope and, for tool, prompt and resource buckets,
// the kind and name of the entry. Kind is "" for the server-level buckets.
type BucketID struct {
	Scope Scope
	Kind  string // "", "tool", "prompt" or "resource"
	Name  string // the tool or prompt name, or the resource URI; "" at server level
	Tier  string // the tier whose per-user bucket this is; "" for the default buckets
}

// String is the bucket's one name wherever a person reads it — RateLimit-Policy and RateLimit
// headers, 429 bodies, metrics, logs, the decision log, simulator reports: "shared" and "user"
// at server level, "tool:<name>" and "tool:<name>:user" (likewise "prompt:" and "resource:")
// for entries; a tier's per-user buckets add "@<tier>" ("user@pro", "tool:search:user@pro").
// Names come from the config, never from a request.
func (b BucketID) String() string {
	user := b.Scope == ScopePerUser
	tier := ""
	if b.Tier != "" {
		tier = "@" + b.Tier
	}
	switch {
	case b.Kind == "" && user:
		return "user" + tier
	case b.Kind == "":
		return "shared"
	case user:
		return b.Kind + ":" + b.Name + ":user" + tier
	}
	return b.Kind + ":" + b.Name
}

// BucketState is one bucket's part in a decision.
type BucketState struct {
	BucketID
	MaxTokens    int32         // capacity
	RefillPeriod time.Duration // time to refill from empty to full
	Cost         int64         // tokens the decision asked of this bucket
	Remaining    int64         // whole tokens left after the decision
	Reset        time.Duration // time until the bucket is full again
	NextToken    time.Duration // time until it holds one more whole token; 0 when full
	Wait         time.Duration // time until it holds Cost tokens; 0 when it already did

	level int64 // the script's level, token-µs: what the deny cache learns from
}

// Decision is the limiter's answer.
type Decision struct {
	// Allowed is true when every applicable bucket held enough tokens; the cost was then taken
	// from all of them. When false, none was touched.
	Allowed bool
	// RetryAfter is the exact time until the same request would be allowed, absent other
	// traffic: the largest Wait among the buckets that were short. 0 when allowed.
	RetryAfter time.Duration
	// Rejected is the short bucket with the largest wait; nil when allowed.
	Rejected *BucketState
	// Buckets are every bucket that applied, server level first, in a fixed order.
	Buckets []BucketState
	// Time is Redis's clock at the decision; zero when no bucket applied (no call was made).
	// For a Local decision, the proxy's clock.
	Time time.Time
	// Local is a rejection the deny cache made without asking Redis (WithDenyCache): Redis
	// would have made it too. Buckets then holds only the buckets the cache knows.
	Local bool
}

// RequestError is a request that no amount of waiting admits: a negative cost, a cost above a
// bucket's capacity, a method the limiter does not know. It is a rejection, never a store
// failure: callers must not let it through under a fail-open policy.
type RequestError struct {
	Bucket string   // the bucket concerned, as BucketID.String names it, when there is one
	ID     BucketID // that bucket (zero when Bucket is "")
	Reason string
}

func (e *RequestError) Error() string {
	if e.Bucket == "" {
		return "invalid request: " + e.Reason
	}
	return e.Bucket + " bucket: " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidRequest) true for every RequestError.
func (e *RequestError) Is(target error) bool { return target == ErrInvalidRequest }

// ErrInvalidRequest matches every *RequestError with errors.Is.
var ErrInvalidRequest = errors.New("invalid request")

// Option configures a Limiter.
type Option func(*options)

type options struct {
	keyPrefix string
	userKey   []byte
	script    *redis.Script
	denyCache int
	// denyEarly: see WithDenyCacheEarly.
	denyEarly int64
	now       func() time.Time
	timeout   time.Duration
}

// WithKeyPrefix sets the prefix of every key, so that several installations can share one
// Redis; "" keeps the default (v1alpha1.DefaultKeyPrefix).
func WithKeyPrefix(prefix string) Option {
	return func(o *options) {
		if prefix != "" {
			o.keyPrefix = prefix
		}
	}
}

// WithDenyCache keeps up to entries bucket bounds learned from Redis's rejections, and
// refuses locally, without a round trip, what Redis would refuse (denycache.go says why that
// is exact). 0: off, every decision asks Redis.
func WithDenyCache(entries int) Option { return func(o *options) { o.denyCache = entries } }

// DefaultDenyCacheEntries is the proxy's deny cache size (--deny-cache): bucket bounds of
// about 150 bytes each. The simulator replays with a cache of this size, as the proxy runs.
const DefaultDenyCacheEntries = 100_000

// WithDenyCacheEarly makes a deliberately WRONG deny cache, for mutation tests only: every
// bound it holds is lowered by tokenMicros token-microseconds (tokens × the bucket's refill
// period in µs), so that it refuses calls Redis would admit. The simulator's denyCacheExact
// property must catch it, as WithScript's mutants are caught by the others. Never used by the
// proxy.
func WithDenyCacheEarly(tokenMicros int64) Option {
	return func(o *options) { o.denyEarly = tokenMicros }
}

// DefaultCallTimeout bounds one script call, the round trip to the store. The store's own
// per-command timeout (100ms by default in the proxy) and its circuit breaker normally answer
// first: this is the backstop for a store that does neither.
const DefaultCallTimeout = 250 * time.Millisecond

// WithCallTimeout sets the bound on one script call (default DefaultCallTimeout; d ≤ 0 keeps
// the default). The limiter applies it only when it asks the store: a refusal of the deny
// cache makes no timer, which a flood of them would pay for on every call.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithClock sets the clock the deny cache measures time on (default time.Now): the simulator
// gives it its virtual time.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithScript runs another Lua source instead of tokenbucket.lua, with the same keys,
// arguments and reply. It exists for mutation tests — a deliberately broken limiter that the
// simulator's property checks must catch — and is never used by the proxy.
func WithScript(source string) Option {
	return func(o *options) { o.script = redis.NewScript(source) }
}

// ScriptSource is the token-bucket script the limiter runs (tokenbucket.lua): mutation tests
// derive their broken copies from it.
func ScriptSource() string { return scriptSource }

// WithUserHashKey sets the secret that keys the user-id hash (the pseudonym) in per-user
// keys. Every replica of a server must use the same key. Default: a fixed, public key, for
// reproducible simulations and tests only — anyone can confirm a pseudonym under it by
// hashing a guessed id. The proxy always sets a key (its key file, or a random one).
func WithUserHashKey(key []byte) Option { return func(o *options) { o.userKey = key } }

// bucket is a configured bucket with its key (shared) or key prefix (per user).
type bucket struct {
	id        BucketID
	maxTokens int64
	periodUS  int64
	key       string // shared buckets: the key; per-user buckets: the key without the user hash
}

// entry holds the buckets of one configured tool, prompt or resource.
type entry struct {
	shared, perUser *bucket
	cost            int64
}

type entryKey struct{ kind, name string }

// tier holds a tier's replacements of the per-user buckets.
type tier struct {
	unlimited bool                 // no per-user bucket applies
	perUser   *bucket              // nil: the default perUser bucket applies
	entries   map[entryKey]*bucket // per-user buckets replaced; others keep the default
}

// Limiter decides MCP calls against the token buckets of one server's RateLimitConfig. It is
// safe for concurrent use and holds no bucket state: all of it lives in Redis, so replicas
// agree and a config change is a new Limiter over the same keys.
type Limiter struct {
	client        redis.Scripter
	script        *redis.Script
	deny          *denyCache // nil: every decision asks Redis
	now           func() time.Time
	timeout       time.Duration // bounds each script call
	keys          keyspace
	shared        *bucket
	perUser       *bucket
	entries       map[entryKey]*entry
	tiers         map[string]*tier
	hasAnyBuckets bool
}

// New returns a limiter for server namespace/name. It rejects an invalid config with an error
// naming the bucket. A nil config allows everything without touching Redis (client may then
// be nil). The client must not retry commands (go-redis: MaxRetries -1): the script is not
// idempotent, and a retry after Redis ran it charges twice.
func New(client redis.Scripter, namespace, name string, cfg *v1alpha1.RateLimitConfig, opts ...Option) (*Limiter, error) {
	o := options{keyPrefix: v1alpha1.DefaultKeyPrefix, script: script, now: time.Now, timeout: DefaultCallTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	keys, err := newKeyspace(o.keyPrefix, namespace, name, o.userKey)
	if err != nil {
		return nil, fmt.Errorf("rate limiter for %s/%s: %w", namespace, name, err)
	}
	l := &Limiter{client: client, script: o.script, now: o.now, timeout: o.timeout, keys: keys, entries: map[entryKey]*entry{}, tiers: map[string]*tier{}}
	if o.denyCache > 0 {
		l.deny = newDenyCache(o.denyCache, o.now)
		l.deny.early = o.denyEarly
	}
	if cfg == nil {
		return l, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rate limiter for %s/%s: %w", namespace, name, err)
	}
	if client == nil {
		return nil, fmt.Errorf("rate limiter for %s/%s: a Redis client is required when rate limiting is configured", namespace, name)
	}
	l.shared = l.newBucket(cfg.Shared, BucketID{Scope: ScopeShared}, keys.shared())
	l.perUser = l.newBucket(cfg.PerUser, BucketID{Scope: ScopePerUser}, keys.userPrefix())
	for _, t := range cfg.Tools {
		l.addEntry(kindTool, t.Name, t.Name, t.Shared, t.PerUser, t.Cost)
	}
	for _, p := range cfg.Prompts {
		l.addEntry(kindPrompt, p.Name, p.Name, p.Shared, p.PerUser, p.Cost)
	}
	for _, r := range cfg.Resources {
		n, err := CanonicalResourceURI(r.URI) // cfg.Validate refused URIs without one, and duplicates
		if err != nil {
			return nil, fmt.Errorf("rate limiter for %s/%s: resource %q: %w", namespace, name, r.URI, err)
		}
		l.addEntry(kindResource, r.URI, n, r.Shared, r.PerUser, r.Cost)
	}
	for _, t := range cfg.Tiers {
		l.addTier(t)
	}
	l.hasAnyBuckets = l.shared != nil || l.perUser != nil || len(l.entries) > 0
	return l, nil
}

// addTier adds a tier's buckets, keyed apart from the default ones (keyspace.tier). A tool a
// tier limits that rateLimiting.tools does not name gets an entry of its own (no shared
// bucket, cost 1), so that the tier's users are limited on it.
func (l *Limiter) addTier(t v1alpha1.RateLimitTier) {
	keys := l.keys.tier(t.Name)
	tr := &tier{unlimited: t.Unlimited, entries: map[entryKey]*bucket{}}
	tr.perUser = l.newBucket(t.PerUser, BucketID{Scope: ScopePerUser, Tier: t.Name}, keys.userPrefix())
	for _, tt := range t.Tools {
		k := entryKey{kindTool, tt.Name}
		if l.entries[k] == nil {
			l.entries[k] = &entry{cost: 1}
		}
		tr.entries[k] = l.newBucket(&tt.PerUser, BucketID{Scope: ScopePerUser, Kind: kindTool, Name: tt.Name, Tier: t.Name}, keys.userEntryPrefix(kindTool, tt.Name))
	}
	l.tiers[t.Name] = tr
}

func (l *Limiter) newBucket(b *v1alpha1.RateLimitBucket, id BucketID, key string) *bucket {
	if b == nil {
		return nil
	}
	return &bucket{id: id, maxTokens: int64(b.MaxTokens), periodUS: b.RefillPeriod.Microseconds(), key: key}
}

// addEntry adds a tool, prompt or resource, matched (in the map and in Redis) by match:
// resources by their canonical URI, so that every spelling of one resource shares its
// buckets; the BucketID keeps the name as configured, for messages.
func (l *Limiter) addEntry(kind, name, match string, shared, perUser *v1alpha1.RateLimitBucket, cost int32) {
	e := &entry{cost: max(int64(cost), 1)}
	e.shared = l.newBucket(shared, BucketID{Scope: ScopeShared, Kind: kind, Name: name}, l.keys.sharedEntry(kind, match))
	e.perUser = l.newBucket(perUser, BucketID{Scope: ScopePerUser, Kind: kind, Name: name}, l.keys.userEntryPrefix(kind, match))
	l.entries[entryKey{kind, match}] = e
}

// Buckets lists the configured buckets: the server's, then each tool's, prompt's and
// resource's (in no particular order).
func (l *Limiter) Buckets() []BucketID {
	var ids []BucketID
	add := func(b *bucket) {
		if b != nil {
			ids = append(ids, b.id)
		}
	}
	add(l.shared)
	add(l.perUser)
	for _, e := range l.entries {
		add(e.shared)
		add(e.perUser)
	}
	for _, t := range l.tiers {
		add(t.perUser)
		for _, b := range t.entries {
			add(b)
		}
	}
	return ids
}

// Decider decides limited calls; *Limiter is one. The proxy's request path takes a Decider,
// so that it can be tested against a fake (a store failure, a fixed answer) without Redis.
type Decider interface {
	// AllowAll decides a batch as one (see Limiter.AllowAll).
	AllowAll(ctx context.Context, reqs []Request) (Decision, error)
	// PerUserApplies reports whether a per-user bucket applies to any of reqs.
	PerUserApplies(reqs []Request) bool
	// Buckets lists the configured buckets.
	Buckets() []BucketID
}

var _ Decider = (*Limiter)(nil)

// Allow decides one request: AllowAll of a one-item batch.
func (l *Limiter) Allow(ctx context.Context, req Request) (Decision, error) {
	return l.AllowAll(ctx, []Request{req})
}

// PerUserApplies reports whether a per-user bucket applies to any of reqs for an identified
// user: the proxy refuses an anonymous caller then (401), rather than let it around the
// per-user limit.
//
// An anonymous caller has no tier, so the default buckets are the ones that count; but with
// tiers configured, any limited call needs an identity: the tiers exist to tell callers apart
// (and an unlimited tier must never be reached by hiding who one is).
func (l *Limiter) PerUserApplies(reqs []Request) bool {
	if l.perUser != nil || len(l.tiers) > 0 {
		return len(reqs) > 0
	}
	for _, r := range reqs {
		if k, err := matchKey(r); err == nil {
			if e := l.entries[k]; e != nil && e.perUser != nil {
				return true
			}
		}
	}
	return false
}

// matchKey is the entries key a request matches: its kind, and its name as entries are keyed
// (resource URIs canonicalised). A method that is not limited, or a URI with no canonical
// form, is a *RequestError: no wait admits it.
func matchKey(r Request) (entryKey, error) {
	switch r.Method {
	case MethodToolsCall:
		return entryKey{kindTool, r.Name}, nil
	case MethodPromptsGet:
		return entryKey{kindPrompt, r.Name}, nil
	case MethodResourcesRead:
		c, err := CanonicalResourceURI(r.Name)
		if err != nil {
			return entryKey{}, &RequestError{Reason: err.Error()}
		}
		return entryKey{kindResource, c}, nil
	}
	return entryKey{}, &RequestError{Reason: fmt.Sprintf("method %q is not rate limited", r.Method)}
}

// use is one bucket's part in a decision: the key and the summed cost.
type use struct {
	b    *bucket
	key  string
	cost int64
}

// AllowAll decides a batch as one: every request's buckets are checked together (costs summed
// per bucket) in ONE script call, and the batch is admitted whole or rejected whole.
//
// A *RequestError (errors.Is ErrInvalidRequest) means the batch can never be admitted; the
// Decision is then a rejection. Any other error is the store's (Redis, network, context):
// the caller's failure policy decides.
func (l *Limiter) AllowAll(ctx context.Context, reqs []Request) (Decision, error) {
	if !l.hasAnyBuckets {
		return Decision{Allowed: true}, nil
	}
	uses, err := l.collect(reqs)
	if err != nil {
		return Decision{}, err
	}
	if len(uses) == 0 {
		return Decision{Allowed: true}, nil
	}
	var sent time.Time
	if l.deny != nil {
		if d, ok := l.deny.refuse(uses); ok {
			return d, nil
		}
		sent = l.now() // before the call: no later than Redis's time of the decision
	}
	keys := make([]string, len(uses))
	args := make([]byte, 0, tripleSize*len(uses))
	for i, u := range uses {
		keys[i] = u.key
		args = appendTriple(args, u.b.maxTokens, u.b.periodUS, u.cost)
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	raw, err := l.script.Run(ctx, l.client, keys, args).Text()
	cancel()
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit script: %w", err)
	}
	var buf [6]int64 // a single call's reply: allowed, time, four levels
	res, err := readReply(raw, buf[:0])
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit script: %w", err)
	}
	if len(res) != 2+len(uses) {
		return Decision{}, fmt.Errorf("rate limit script: %d results for %d buckets", len(res), len(uses))
	}
	d := decide(res[0] == 1, res[1], res[2:], uses)
	if l.deny != nil && !d.Allowed {
		l.deny.learn(d, uses, sent)
	}
	return d, nil
}

// collect lists the buckets a batch applies to, each once with its costs summed, server-level
// buckets first. It refuses what no wait could admit.
func (l *Limiter) collect(reqs []Request) ([]use, error) {
	uses := make([]use, 0, 4) // a single call meets at most four buckets
	add := func(b *bucket, user string, cost int64) {
		if b == nil {
			return
		}
		key := b.key
		if b.id.Scope == ScopePerUser {
			if user == "" {
				return // anonymous: per-user buckets do not apply
			}
			key += user
		}
		for i := range uses {
			if uses[i].key == key {
				uses[i].cost += cost
				return
			}
		}
		uses = append(uses, use{b: b, key: key, cost: cost})
	}
	for _, r := range reqs {
		k, err := matchKey(r)
		if err != nil {
			return nil, err
		}
		if r.Cost < 0 {
			return nil, &RequestError{Reason: fmt.Sprintf("cost %d is negative", r.Cost)}
		}
		cost := max(int64(r.Cost), 1)
		e := l.entries[k]
		if e != nil {
			cost *= e.cost
		}
		var user string
		if r.UserID != "" {
			user = l.keys.users.Hash(r.UserID)
		}
		perUser := l.perUser
		var entryPerUser *bucket
		if e != nil {
			entryPerUser = e.perUser
		}
		if r.Tier != "" {
			t := l.tiers[r.Tier]
			switch {
			case t == nil:
				return nil, &RequestError{Reason: fmt.Sprintf("tier %q is not configured", r.Tier)}
			case t.unlimited:
				perUser, entryPerUser = nil, nil
			default:
				if t.perUser != nil {
					perUser = t.perUser
				}
				if b := t.entries[k]; b != nil {
					entryPerUser = b
				}
			}
		}
		add(l.shared, user, cost)
		add(perUser, user, cost)
		if e != nil {
			add(e.shared, user, cost)
			add(entryPerUser, user, cost)
		}
	}
	for _, u := range uses {
		if u.cost > u.b.maxTokens {
			return nil, &RequestError{Bucket: u.b.id.String(), ID: u.b.id, Reason: fmt.Sprintf("cost %d exceeds maxTokens %d: it can never be admitted", u.cost, u.b.maxTokens)}
		}
	}
	return uses, nil
}

// decide turns the script's levels (token-microseconds) into a Decision. All arithmetic is in
// int64 and exact.
func decide(allowed bool, nowUS int64, levels []int64, uses []use) Decision {
	d := Decision{Allowed: allowed, Time: time.UnixMicro(nowUS), Buckets: make([]BucketState, len(uses))}
	for i, u := range uses {
		b, level := u.b, levels[i]
		s := BucketState{
			BucketID:     b.id,
			MaxTokens:    int32(b.maxTokens),
			RefillPeriod: time.Duration(b.periodUS) * time.Microsecond,
			Cost:         u.cost,
			Remaining:    level / b.periodUS,
			Reset:        ceilDiv(b.maxTokens*b.periodUS-level, b.maxTokens),
			level:        level,
		}
		if level < b.maxTokens*b.periodUS {
			s.NextToken = ceilDiv(b.periodUS-level%b.periodUS, b.maxTokens)
		}
		if need := u.cost*b.periodUS - level; !allowed && need > 0 {
			s.Wait = ceilDiv(need, b.maxTokens)
		}
		d.Buckets[i] = s
	}
	if !allowed {
		for i := range d.Buckets {
			if s := &d.Buckets[i]; s.Wait > d.RetryAfter {
				d.RetryAfter, d.Rejected = s.Wait, s
			}
		}
	}
	return d
}

// ceilDiv returns ⌈units / ratePerUS⌉ microseconds as a Duration.
func ceilDiv(units, ratePerUS int64) time.Duration {
	if units <= 0 {
		return 0
	}
	return time.Duration((units+ratePerUS-1)/ratePerUS) * time.Microsecond
}
