// Package model is an independent reference implementation of Tollgate's token buckets in
// pure Go: which buckets a call applies to, continuous refill, all-or-nothing admission,
// exact RetryAfter. The simulator steps it beside the real limiter (the Lua script on
// miniredis) and requires the same decision for every call: a differential test of the
// script. It is written from the contract in docs/limiter.md, not from the script, and does
// all its arithmetic in int64 (levels in token-microseconds, as the contract states), so that
// agreement is exact, never "close enough".
package model

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// Bucket is one configured bucket as one caller sees it: a shared bucket (User "") or one
// user's instance of a per-user bucket.
type Bucket struct {
	ID   ratelimit.BucketID
	User string
}

func (b Bucket) String() string {
	if b.User == "" {
		return b.ID.String()
	}
	return fmt.Sprintf("%s of %q", b.ID, b.User)
}

// Use is a bucket's part in one decision.
type Use struct {
	Bucket
	MaxTokens int64
	PeriodUS  int64
	Cost      int64 // tokens, summed over the calls of a batch
	key       Key
}

// Key is a Bucket in eight bytes and a user: the configured bucket's index (the config's
// buckets are numbered when the model is made) and the user of a per-user bucket. Maps of
// every user's buckets are keyed by it, not by the Bucket's names.
type Key struct {
	bucket int32
	user   string
}

// Key is the bucket's compact key.
func (u Use) Key() Key { return u.key }

// State is a bucket's part in a verdict, in the limiter's terms.
type State struct {
	ID        ratelimit.BucketID
	Cost      int64
	Remaining int64         // whole tokens after the decision
	Reset     time.Duration // until full
	Wait      time.Duration // until it holds Cost; 0 when it did
}

// Verdict is the model's decision.
type Verdict struct {
	Outcome    ratelimit.Outcome // the verdict: allowed, rejected, invalid or unidentified
	RetryAfter time.Duration
	Buckets    []State // sorted by bucket (SortStates)
}

type entryKey struct{ kind, name string }

type entry struct {
	shared, perUser *v1alpha1.RateLimitBucket
	weight          int64
	index           int32 // its shared bucket's Key index; its per-user bucket's is the next
}

// The Key indexes of the server-level buckets; entries' buckets follow.
const (
	sharedIndex  = 0
	perUserIndex = 1
)

// level is a bucket's stored state: token-microseconds at a time in µs, and when it is full
// again (from then on it is as good as never written).
type level struct{ units, at, fullAt int64 }

// tier is a tier's replacements of the per-user buckets (docs/limiter.md, "Tiers"): its
// perUser bucket instead of rateLimiting.perUser, its tools' buckets instead of those tools'
// perUser buckets; unlimited, none at all.
type tier struct {
	unlimited bool
	perUser   *v1alpha1.RateLimitBucket
	index     int32 // its perUser bucket's Key index
	tools     map[string]tierTool
}

type tierTool struct {
	bucket *v1alpha1.RateLimitBucket
	index  int32
}

// Model holds every bucket's level. Not safe for concurrent use.
type Model struct {
	cfg     *v1alpha1.RateLimitConfig
	entries map[entryKey]entry
	tiers   map[string]tier
	levels  map[Key]level
	// writes counts the levels written since the last sweep.
	writes int
}

// New returns a model of cfg with every bucket full.
func New(cfg *v1alpha1.RateLimitConfig) *Model {
	m := &Model{cfg: cfg, entries: map[entryKey]entry{}, tiers: map[string]tier{}, levels: map[Key]level{}}
	if cfg == nil {
		return m
	}
	index := int32(perUserIndex + 1)
	add := func(kind, name string, shared, perUser *v1alpha1.RateLimitBucket, cost int32) {
		m.entries[entryKey{kind, name}] = entry{shared: shared, perUser: perUser, weight: max(int64(cost), 1), index: index}
		index += 2
	}
	for _, t := range cfg.Tools {
		add("tool", t.Name, t.Shared, t.PerUser, t.Cost)
	}
	for _, p := range cfg.Prompts {
		add("prompt", p.Name, p.Shared, p.PerUser, p.Cost)
	}
	for _, r := range cfg.Resources {
		add("resource", canonical(r.URI), r.Shared, r.PerUser, r.Cost)
	}
	// A tier's buckets are numbered apart from the default ones: a user in a tier has
	// buckets of their own, and one who changes tier meets the other tier's afresh.
	for _, t := range cfg.Tiers {
		tr := tier{unlimited: t.Unlimited, perUser: t.PerUser, index: index, tools: map[string]tierTool{}}
		index++
		for _, tt := range t.Tools {
			tr.tools[tt.Name] = tierTool{bucket: &tt.PerUser, index: index}
			index++
		}
		m.tiers[t.Name] = tr
	}
	return m
}

// lookup finds the configured entry of a call, and the name its BucketIDs carry (a
// resource's URI as configured, not as normalised).
func (m *Model) lookup(c traffic.Call) (string, entry, bool) {
	switch c.Method {
	case ratelimit.MethodToolsCall:
		e, ok := m.entries[entryKey{"tool", c.Name}]
		return "tool", e, ok
	case ratelimit.MethodPromptsGet:
		e, ok := m.entries[entryKey{"prompt", c.Name}]
		return "prompt", e, ok
	case ratelimit.MethodResourcesRead:
		e, ok := m.entries[entryKey{"resource", canonical(c.Name)}]
		return "resource", e, ok
	}
	return "", entry{}, false
}

// canonical is a resource URI as entries are matched; one with no canonical form matches
// nothing (the limiter refuses such a call).
func canonical(uri string) string {
	if c, err := ratelimit.CanonicalResourceURI(uri); err == nil {
		return c
	}
	return "\x00" + uri
}

// configuredName is the name of the entry a call matched, as written in the config.
func (m *Model) configuredName(kind string, c traffic.Call) string {
	if kind != "resource" {
		return c.Name
	}
	n := canonical(c.Name)
	for _, r := range m.cfg.Resources {
		if canonical(r.URI) == n {
			return r.URI
		}
	}
	return c.Name
}

// Uses lists the buckets a decision of user's calls in tierName ("" for none) applies to,
// each once with its costs summed, and whether the decision is invalid (a bucket could
// never hold the cost, a resource URI has no canonical form, or the config has no such
// tier).
func (m *Model) Uses(user, tierName string, calls []traffic.Call) (uses []Use, invalid bool) {
	if m.cfg == nil {
		return nil, false
	}
	t, inTier := m.tiers[tierName]
	if tierName != "" && !inTier {
		return nil, true // as the limiter: a tier it does not know is never admitted
	}
	add := func(b *v1alpha1.RateLimitBucket, index int32, id ratelimit.BucketID, perUser bool, cost int64) {
		if b == nil || (perUser && user == "") {
			return
		}
		key := Key{bucket: index}
		if perUser {
			key.user = user
		}
		for i := range uses {
			if uses[i].key == key {
				uses[i].Cost += cost
				return
			}
		}
		uses = append(uses, Use{Bucket: Bucket{ID: id, User: key.user}, MaxTokens: int64(b.MaxTokens), PeriodUS: b.RefillPeriod.Microseconds(), Cost: cost, key: key})
	}
	for _, c := range calls {
		if c.Method == ratelimit.MethodResourcesRead {
			if _, err := ratelimit.CanonicalResourceURI(c.Name); err != nil {
				return nil, true // as the limiter: a URI with no canonical form is never admitted
			}
		}
		kind, e, ok := m.lookup(c)
		cost := max(int64(c.Cost), 1)
		if ok {
			cost *= e.weight
		}
		// The per-user buckets: the default ones, or the tier's where it replaces them.
		perUser, perUserIdx, perUserID := m.cfg.PerUser, int32(perUserIndex), ratelimit.BucketID{Scope: ratelimit.ScopePerUser}
		entryPerUser, entryIdx, entryTier := e.perUser, e.index+1, ""
		tt, tierLimitsTool := t.tools[c.Name]
		tierLimitsTool = tierLimitsTool && c.Method == ratelimit.MethodToolsCall && !t.unlimited
		switch {
		case !inTier:
		case t.unlimited:
			perUser, entryPerUser = nil, nil
		default:
			if t.perUser != nil {
				perUser, perUserIdx, perUserID.Tier = t.perUser, t.index, tierName
			}
			if tierLimitsTool {
				entryPerUser, entryIdx, entryTier = tt.bucket, tt.index, tierName
			}
		}
		add(m.cfg.Shared, sharedIndex, ratelimit.BucketID{Scope: ratelimit.ScopeShared}, false, cost)
		add(perUser, perUserIdx, perUserID, true, cost)
		switch {
		case ok:
			name := m.configuredName(kind, c)
			add(e.shared, e.index, ratelimit.BucketID{Scope: ratelimit.ScopeShared, Kind: kind, Name: name}, false, cost)
			add(entryPerUser, entryIdx, ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: kind, Name: name, Tier: entryTier}, true, cost)
		case tierLimitsTool:
			// A tool only the tier limits: its users have a bucket for it, nobody else does.
			add(entryPerUser, entryIdx, ratelimit.BucketID{Scope: ratelimit.ScopePerUser, Kind: "tool", Name: c.Name, Tier: entryTier}, true, cost)
		}
	}
	for _, u := range uses {
		if u.Cost > u.MaxTokens {
			invalid = true
		}
	}
	return uses, invalid
}

// PerUserApplies is whether an anonymous caller of calls must be refused for want of an
// identity (the proxy's 401, before any decision).
func (m *Model) PerUserApplies(calls []traffic.Call) bool {
	if m.cfg == nil || len(calls) == 0 {
		return false
	}
	if m.cfg.PerUser != nil || len(m.cfg.Tiers) > 0 {
		// With tiers every limited call needs an identity: the tiers exist to tell callers
		// apart, and an unlimited tier must not be reached by hiding who one is.
		return true
	}
	for _, c := range calls {
		if _, e, ok := m.lookup(c); ok && e.perUser != nil {
			return true
		}
	}
	return false
}

// Level is a bucket's level in token-microseconds at time atUS, as refilled since it was
// last written; a bucket never written is full.
func (m *Model) Level(u Use, atUS int64) int64 {
	capacity := u.MaxTokens * u.PeriodUS
	l, ok := m.levels[u.key]
	if !ok {
		return capacity
	}
	elapsed := atUS - l.at
	if elapsed <= 0 {
		return l.units
	}
	// A whole period refills any level; checking first keeps elapsed × maxTokens below
	// capacity, which the CRD keeps below 2^53.
	if elapsed >= u.PeriodUS || elapsed*u.MaxTokens >= capacity-l.units {
		return capacity
	}
	return l.units + elapsed*u.MaxTokens
}

// Decide decides user's calls in tier ("" for none) at atUS (µs since the run's epoch, the
// same clock as the limiter's) and, when admitted, takes the cost from every bucket.
func (m *Model) Decide(atUS int64, user, tier string, calls []traffic.Call) Verdict {
	v, _ := m.DecideUses(atUS, user, tier, calls)
	SortStates(v.Buckets)
	return v
}

// DecideUses is Decide with the verdict's Buckets unsorted: in the order of the buckets it
// returns (Uses's order, which is the limiter's: server level first, then the entry's, each
// shared before per-user). The model engine uses it to report the limiter's own order.
func (m *Model) DecideUses(atUS int64, user, tier string, calls []traffic.Call) (Verdict, []Use) {
	if user == "" && m.PerUserApplies(calls) {
		return Verdict{Outcome: ratelimit.OutcomeUnidentified}, nil
	}
	uses, invalid := m.Uses(user, tier, calls)
	if invalid {
		return Verdict{Outcome: ratelimit.OutcomeInvalid}, uses
	}
	if len(uses) == 0 {
		return Verdict{Outcome: ratelimit.OutcomeAllowed}, nil
	}
	levels := make([]int64, len(uses))
	admit := true
	for i, u := range uses {
		levels[i] = m.Level(u, atUS)
		if levels[i] < u.Cost*u.PeriodUS {
			admit = false
		}
	}
	v := Verdict{Outcome: ratelimit.OutcomeRejected}
	if admit {
		v.Outcome = ratelimit.OutcomeAllowed
		for i, u := range uses {
			levels[i] -= u.Cost * u.PeriodUS
			fullAt := atUS + ceilMicros(u.MaxTokens*u.PeriodUS-levels[i], u.MaxTokens).Microseconds()
			m.levels[u.key] = level{units: levels[i], at: atUS, fullAt: fullAt}
			m.writes++
		}
	}
	for i, u := range uses {
		s := State{
			ID:        u.ID,
			Cost:      u.Cost,
			Remaining: levels[i] / u.PeriodUS,
			Reset:     ceilMicros(u.MaxTokens*u.PeriodUS-levels[i], u.MaxTokens),
		}
		if !admit {
			s.Wait = ceilMicros(u.Cost*u.PeriodUS-levels[i], u.MaxTokens)
			v.RetryAfter = max(v.RetryAfter, s.Wait)
		}
		v.Buckets = append(v.Buckets, s)
	}
	return v, uses
}

// Sweep forgets the buckets that are full again at nowUS: a bucket never written is full,
// so forgetting a full one changes no decision, and the model then holds only the buckets
// in use (as Redis holds only the keys whose TTL has not run out). It walks the levels only
// once as many have been written since the last walk, so its cost per decision is constant.
// Times must not go back after a sweep (the engine replays in time order).
func (m *Model) Sweep(nowUS int64) {
	if m.writes < len(m.levels) || m.writes < 1024 {
		return
	}
	m.writes = 0
	for b, l := range m.levels {
		if l.fullAt <= nowUS {
			delete(m.levels, b)
		}
	}
}

// Buckets is how many buckets the model holds a level for.
func (m *Model) Buckets() int { return len(m.levels) }

// ceilMicros is ⌈units / perMicro⌉ µs, 0 when units ≤ 0.
func ceilMicros(units, perMicro int64) time.Duration {
	if units <= 0 {
		return 0
	}
	return time.Duration((units+perMicro-1)/perMicro) * time.Microsecond
}

// SortStates orders bucket states by scope, kind and name, so that the model's and the
// limiter's lists compare whatever order each builds them in.
func SortStates(s []State) {
	slices.SortFunc(s, func(a, b State) int {
		return cmp.Or(cmp.Compare(a.ID.Scope, b.ID.Scope), cmp.Compare(a.ID.Kind, b.ID.Kind), cmp.Compare(a.ID.Name, b.ID.Name), cmp.Compare(a.ID.Tier, b.ID.Tier))
	})
}
