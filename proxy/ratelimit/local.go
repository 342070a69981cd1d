package ratelimit

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLocalMaxKeys is LocalOptions.MaxKeys when unset: about 180 MB of buckets at the
// measured 180 bytes a key (TestLocalStoreMemory).
const DefaultLocalMaxKeys = 1_000_000

// LocalOptions configures a LocalStore.
type LocalOptions struct {
	// Now is the store's clock: the script's TIME. nil: time.Now.
	Now func() time.Time
	// MaxKeys bounds the keys held (0: DefaultLocalMaxKeys). A decision that would create a
	// key past it first evicts the key that would be full the soonest (see LocalStore).
	MaxKeys int
}

// LocalStore runs tokenbucket.lua's algorithm in Go, in process: the memory store of a single
// proxy replica, and a store for tests and the simulator that needs no Redis. It implements
// redis.Scripter, so New(NewLocalStore(...), ...) works unchanged: same keys, same arguments,
// same reply, and each key holds the value the script would store (encodeStored), expiring
// after the TTL the script would give it.
//
// # Exactness
//
// Each step of the script is done here in the same order. In the arguments' domain (below)
// every value the script forms is an integer below 2^53, which doubles hold exactly, so int64
// arithmetic gives the same numbers; the two divisions are done in float64 as the script does
// them: the rescale after a period change (math.floor(level / p * period), which rounds
// differently from exact integer division for some levels) and the TTL. The tests compare
// every reply, stored value and TTL with the Lua script on a real redis-server and on
// miniredis (TestLocalStoreMatchesScript).
//
// Arguments are three integers per key, maxTokens ≥ 1, period ≥ 1 µs and cost ≥ 0, with
// maxTokens × period and cost × period at most 2^53 (the CRD bound keeps the limiter's well
// below). Outside that domain the script computes with rounded doubles (or fails half-way,
// after some of its writes); this store returns an error reply instead, and writes nothing.
//
// # Atomicity
//
// One mutex serializes decisions, as Redis serializes scripts: a decision reads the clock,
// checks and takes under it, so no other decision sees its keys half-updated, and the times
// of successive decisions never go back unless the clock does. The section holds a few map
// lookups and integer operations (a whole four-key call takes under a microsecond,
// BenchmarkLocalStore/script), far below a proxied request's cost, so the lock is not what
// limits a proxy.
//
// # Expiry and memory
//
// A key expires as in Redis: it lives while the clock's whole milliseconds are at most its
// expiry time (the decision's millisecond plus the TTL). An expired key reads as missing, a
// full bucket, which is what it held anyway: the TTL is the time to full. Keys are kept in a
// min-heap by expiry time; each decision removes a few expired keys from its top, and
// RemoveExpired removes all of them (the memory store calls it periodically, so that an idle
// store shrinks too). Maps are rebuilt, one shard at a time, when they fall to a quarter of
// their peak (Go maps never shrink), so memory goes back down after a burst of users.
//
// # Eviction
//
// Past MaxKeys a new key evicts the key that would be full the soonest: the top of the same
// heap. An evicted key reads as a full bucket, so eviction admits what the bucket had not yet
// refilled; the soonest-full key is the one whose early refill is the shortest (what Redis's
// volatile-ttl policy does, and for the same reason; LRU would drop a user who spent a daily
// quota and paused, and give the whole quota back). Evictions counts them.
type LocalStore struct {
	now     func() time.Time
	maxKeys int
	seed    maphash.Seed

	mu        sync.Mutex
	shards    [localShards]localShard
	keys      int         // keys held, expired ones not yet removed included (like DBSIZE)
	expiry    []heapEntry // every key, a min-heap by expiry time
	evictions int64

	// Mutation tests replace the port's pieces with broken copies that the tests must catch
	// (local_test.go); nil in every real store.
	levelFn func(stored *localKey, maxTokens, period, nowUS int64) int64
	ttlFn   func(capacity, level, maxTokens int64) int64
	midTake func() // called between the check and the take, with the lock released
}

// localShards splits the keys over several maps so that rebuilding one (to give memory back)
// copies a small part of them while decisions wait.
const localShards = 64

type localShard struct {
	m    map[string]*localKey
	peak int // the most keys m held since it was made: Go maps keep their peak size
}

// localKey is one stored bucket: the value the script stores, as integers.
type localKey struct {
	key               string
	level, at, period int64 // the script's stored value (encodeStored)
	expireMS          int64 // Unix ms; the key lives while the clock's ms ≤ expireMS (Redis's rule)
	heapIndex         int
}

// heapEntry keeps the expiry time beside the pointer, so that heap comparisons read the
// heap's own array rather than every key they pass.
type heapEntry struct {
	expireMS int64
	k        *localKey
}

// NewLocalStore returns an in-process store that runs tokenbucket.lua's algorithm in Go. It
// implements redis.Scripter (Eval, EvalSha, EvalRO, EvalShaRO, ScriptExists, ScriptLoad), so
// ratelimit.New(NewLocalStore(...), ...) works unchanged: same keys, same arguments, same
// reply.
func NewLocalStore(opts LocalOptions) *LocalStore {
	s := &LocalStore{now: opts.Now, maxKeys: opts.MaxKeys, seed: maphash.MakeSeed()}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxKeys <= 0 {
		s.maxKeys = DefaultLocalMaxKeys
	}
	for i := range s.shards {
		s.shards[i].m = map[string]*localKey{}
	}
	return s
}

var _ redis.Scripter = (*LocalStore)(nil)

// scriptSHA is the SHA1 of tokenbucket.lua, as EVALSHA names it.
var scriptSHA = script.Hash()

// LocalError is an error reply of a LocalStore. Like go-redis's own, it is a redis.Error, so
// go-redis (Script.Run's fallback from EVALSHA to EVAL on NOSCRIPT) and callers that tell
// Redis's answers from network failures see it as a reply.
type LocalError string

func (e LocalError) Error() string { return string(e) }

// RedisError marks LocalError as a redis.Error.
func (LocalError) RedisError() {}

var (
	errNoScript = LocalError("NOSCRIPT No matching script. Please use EVAL.")
	errOnlyOurs = LocalError("ERR local store runs only the limiter's script (tokenbucket.lua), not this one")
	errReadOnly = LocalError("ERR Write commands are not allowed from read-only scripts.")
)

// Eval runs the limiter's script, given by its source; any other source is an error reply.
func (s *LocalStore) Eval(ctx context.Context, src string, keys []string, args ...interface{}) *redis.Cmd {
	return s.run(ctx, "eval", src == scriptSource, keys, args, false)
}

// EvalSha runs the limiter's script, named by its SHA1; any other is NOSCRIPT, as Redis
// answers for a script it does not hold (go-redis's Script.Run then tries Eval).
func (s *LocalStore) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	return s.run(ctx, "evalsha", strings.EqualFold(sha1, scriptSHA), keys, args, false)
}

// EvalRO is Eval as a read-only script: a decision that would write (an admission) is an
// error reply and writes nothing, as Redis refuses the script's first SET; a rejection,
// which writes nothing, is answered.
func (s *LocalStore) EvalRO(ctx context.Context, src string, keys []string, args ...interface{}) *redis.Cmd {
	return s.run(ctx, "eval_ro", src == scriptSource, keys, args, true)
}

// EvalShaRO is EvalSha as a read-only script (see EvalRO).
func (s *LocalStore) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	return s.run(ctx, "evalsha_ro", strings.EqualFold(sha1, scriptSHA), keys, args, true)
}

// ScriptExists reports true for the limiter's script only.
func (s *LocalStore) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	cmd := redis.NewBoolSliceCmd(ctx, "script", "exists")
	if err := ctx.Err(); err != nil {
		cmd.SetErr(err)
		return cmd
	}
	found := make([]bool, len(hashes))
	for i, h := range hashes {
		found[i] = strings.EqualFold(h, scriptSHA)
	}
	cmd.SetVal(found)
	return cmd
}

// ScriptLoad "loads" the limiter's script (it is always there) and returns its SHA1; any
// other script is an error reply: this store cannot run Lua.
func (s *LocalStore) ScriptLoad(ctx context.Context, src string) *redis.StringCmd {
	cmd := redis.NewStringCmd(ctx, "script", "load")
	switch {
	case ctx.Err() != nil:
		cmd.SetErr(ctx.Err())
	case src != scriptSource:
		cmd.SetErr(errOnlyOurs)
	default:
		cmd.SetVal(scriptSHA)
	}
	return cmd
}

// Len returns the number of keys held, expired keys not yet removed included (as Redis's
// DBSIZE counts them).
func (s *LocalStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

// Evictions returns the number of live keys evicted to keep MaxKeys.
func (s *LocalStore) Evictions() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evictions
}

// Get reads a key at the store's clock, as GET and PTTL would: its value (as the script
// stores it, encodeStored) and its time to live (whole ms). found is false for a missing or expired key.
func (s *LocalStore) Get(key string) (value string, ttl time.Duration, found bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowMS := s.now().UnixMilli()
	k := s.shard(key).m[key]
	if k == nil || !k.liveAt(nowMS) {
		return "", 0, false
	}
	return k.value(), time.Duration(k.expireMS-nowMS) * time.Millisecond, true
}

// Keys lists the keys that live at the store's clock (KEYS *), in no particular order.
func (s *LocalStore) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowMS := s.now().UnixMilli()
	var keys []string
	for i := range s.shards {
		for key, k := range s.shards[i].m {
			if k.liveAt(nowMS) {
				keys = append(keys, key)
			}
		}
	}
	return keys
}

// RemoveExpired removes every expired key and gives memory back (maps and the heap shrink);
// it returns how many keys it removed. It holds the lock for a bounded batch at a time, so
// decisions go on meanwhile.
func (s *LocalStore) RemoveExpired() int {
	removed := 0
	for {
		s.mu.Lock()
		n := s.removeExpired(s.now().UnixMilli(), 4096)
		s.mu.Unlock()
		removed += n
		if n < 4096 {
			return removed
		}
	}
}

func (k *localKey) value() string { return encodeStored(k.level, k.at, k.period) }

// liveAt applies Redis's rule: a key lives through the ms of its expiry time.
func (k *localKey) liveAt(nowMS int64) bool { return nowMS <= k.expireMS }

func (s *LocalStore) shard(key string) *localShard {
	return &s.shards[maphash.String(s.seed, key)%localShards]
}

// bucketArgs are one key's three arguments.
type bucketArgs struct{ maxTokens, period, cost int64 }

// maxExact is 2^53: every integer up to it is a double, so up to it the script is exact.
const maxExact = 1 << 53

// run runs the limiter's script (known false: another script, an error reply).
func (s *LocalStore) run(ctx context.Context, name string, known bool, keys []string, args []interface{}, readOnly bool) *redis.Cmd {
	cmd := redis.NewCmd(ctx, name)
	if err := ctx.Err(); err != nil { // as a client does not send a command for a done context
		cmd.SetErr(err)
		return cmd
	}
	switch {
	case !known && strings.HasPrefix(name, "evalsha"):
		cmd.SetErr(errNoScript)
		return cmd
	case !known:
		cmd.SetErr(errOnlyOurs)
		return cmd
	}
	var buf [4]bucketArgs // a single call meets at most four buckets
	a, err := parseArgs(keys, args, buf[:0])
	if err != nil {
		cmd.SetErr(err)
		return cmd
	}
	reply, err := s.decide(keys, a, readOnly)
	if err != nil {
		cmd.SetErr(err)
		return cmd
	}
	cmd.SetVal(reply)
	return cmd
}

// parseArgs reads the script's one argument: three integers per key, in its binary form.
func parseArgs(keys []string, args []interface{}, a []bucketArgs) ([]bucketArgs, error) {
	if len(keys) == 0 {
		// The script's MGET of no key is Redis's argument-count error.
		return nil, LocalError("ERR wrong number of arguments for 'mget' command")
	}
	raw, ok := scriptArg(args)
	if !ok {
		return nil, LocalError(fmt.Sprintf("ERR the limiter's script takes its arguments as bytes, not %T", args[0]))
	}
	if len(args) > 1 || len(raw) != tripleSize*len(keys) {
		// The script's own answer to a wrong length. A second argument, which the script
		// ignores, is refused too: only a caller's bug sends one.
		return nil, LocalError(fmt.Sprintf("ERR the limiter's script takes one argument of %d bytes per key: %d bytes for %d keys", tripleSize, len(raw), len(keys)))
	}
	for i := range keys {
		maxTokens, period, cost := readTriple(raw[tripleSize*i:])
		b := bucketArgs{maxTokens: maxTokens, period: period, cost: cost}
		switch {
		case b.maxTokens < 1 || b.period < 1 || b.cost < 0:
			return nil, LocalError(fmt.Sprintf("ERR key %d: maxTokens %d, period %d µs, cost %d: want maxTokens ≥ 1, period ≥ 1, cost ≥ 0", i+1, b.maxTokens, b.period, b.cost))
		case b.maxTokens > maxExact/b.period || b.cost > maxExact/b.period:
			return nil, LocalError(fmt.Sprintf("ERR key %d: maxTokens %d or cost %d × period %d µs is above 2^53, where the script's doubles are no longer exact", i+1, b.maxTokens, b.cost, b.period))
		}
		a = append(a, b)
	}
	return a, nil
}

// decide is the script: read every bucket, admit when each holds its cost, then take the
// cost from all of them, in one critical section.
func (s *LocalStore) decide(keys []string, a []bucketArgs, readOnly bool) (string, error) {
	n := len(keys)
	var kbuf [4]*localKey
	var lbuf [4]int64
	stored, levels := kbuf[:0], lbuf[:0]
	if n > len(kbuf) {
		stored, levels = make([]*localKey, 0, n), make([]int64, 0, n)
	}
	levelFn, ttlFn := s.levelFn, s.ttlFn
	if levelFn == nil {
		levelFn = luaLevel
	}
	if ttlFn == nil {
		ttlFn = luaTTL
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	nowUS := s.now().UnixMicro() // TIME
	nowMS := nowUS / 1000
	allowed := true
	// The script's MGET: every bucket is read before any is written.
	for i, key := range keys {
		k := s.shard(key).m[key]
		if k != nil && !k.liveAt(nowMS) {
			k = nil // expired: gone, a full bucket
		}
		stored = append(stored, k)
		levels = append(levels, levelFn(k, a[i].maxTokens, a[i].period, nowUS))
		if levels[i] < a[i].cost*a[i].period {
			allowed = false
		}
	}
	if allowed && readOnly {
		return "", errReadOnly // the first SET fails, before any write
	}
	if allowed {
		if s.midTake != nil {
			s.mu.Unlock()
			s.midTake()
			s.mu.Lock()
		}
		s.makeRoom(keys, stored, nowMS)
		for i, key := range keys {
			level := levels[i] - a[i].cost*a[i].period
			levels[i] = level
			ttlMS := ttlFn(a[i].maxTokens*a[i].period, level, a[i].maxTokens)
			s.write(key, level, nowUS, a[i].period, nowMS+ttlMS)
		}
	}
	// Each call removes a few expired keys, more than a decision writes, so that expired
	// keys do not pile up between RemoveExpired calls under traffic.
	s.removeExpired(nowMS, 2*n+2)

	// The script's reply: allowed, time and levels as 8-byte integers in one string.
	out := make([]byte, 0, 8*(n+2))
	var admitted uint64
	if allowed {
		admitted = 1
	}
	out = binary.BigEndian.AppendUint64(out, admitted)
	out = binary.BigEndian.AppendUint64(out, uint64(nowUS))
	for _, l := range levels {
		out = binary.BigEndian.AppendUint64(out, uint64(l))
	}
	return string(out), nil
}

// luaLevel is the script's reading of one bucket at nowUS, line for line (tokenbucket.lua's
// loop body): stored nil is a missing key.
func luaLevel(stored *localKey, maxTokens, period, nowUS int64) int64 {
	capacity := maxTokens * period
	if stored == nil || stored.level < 0 || stored.at < 0 {
		// Missing, or a value the script's pattern ^(%d+) (%d+) (%d+)$ would not match (a
		// time before 1970): a full bucket.
		return capacity
	}
	level := stored.level
	if stored.period != period {
		// math.floor(level / p * period), in the script's doubles: exact integer division
		// rounds differently for some levels. Above the capacity it is clamped next anyway
		// (and may not fit an int64).
		f := math.Floor(float64(level) / float64(stored.period) * float64(period))
		if f > float64(capacity) {
			f = float64(capacity)
		}
		level = int64(f)
	}
	level = min(level, capacity)
	elapsed := min(max(nowUS-stored.at, 0), period)
	if refill := elapsed * maxTokens; refill < capacity-level {
		return level + refill
	}
	return capacity
}

// luaTTL is the script's TTL in ms for a bucket left at level: the time to full, rounded up
// to whole ms, math.floor((cap - level) / max / 1000) + 1 in the same doubles. (In the
// arguments' domain this equals integer division: the two roundings could cross an integer
// only for cap - level ≥ 2^53 - 1. It is computed as the script computes it all the same.)
func luaTTL(capacity, level, maxTokens int64) int64 {
	return int64(math.Floor(float64(capacity-level)/float64(maxTokens)/1000)) + 1
}

// makeRoom evicts keys until the new keys of a decision fit under maxKeys. The decision's own
// keys are never evicted.
func (s *LocalStore) makeRoom(keys []string, stored []*localKey, nowMS int64) {
	fresh := 0
	for i, k := range stored {
		if k == nil && s.shard(keys[i]).m[keys[i]] == nil && !slicesContains(keys[:i], keys[i]) {
			fresh++
		}
	}
	var aside []*localKey
	for s.keys+fresh > s.maxKeys && len(s.expiry) > 0 {
		k := s.expiry[0].k
		if slicesContains(keys, k.key) {
			s.heapRemove(0) // this decision's: put back below
			aside = append(aside, k)
			continue
		}
		if k.liveAt(nowMS) {
			s.evictions++
		}
		s.remove(k)
	}
	for _, k := range aside {
		s.heapPush(k)
	}
}

func slicesContains(keys []string, key string) bool {
	for _, k := range keys {
		if k == key {
			return true
		}
	}
	return false
}

// write stores a bucket: SET key value PX ttl.
func (s *LocalStore) write(key string, level, at, period, expireMS int64) {
	sh := s.shard(key)
	k := sh.m[key]
	if k == nil {
		k = &localKey{key: key}
		sh.m[key] = k
		sh.peak = max(sh.peak, len(sh.m))
		s.keys++
		k.level, k.at, k.period, k.expireMS = level, at, period, expireMS
		s.heapPush(k)
		return
	}
	k.level, k.at, k.period, k.expireMS = level, at, period, expireMS
	s.expiry[k.heapIndex].expireMS = expireMS
	s.heapFix(k.heapIndex)
}

// remove deletes a key from its map and the heap.
func (s *LocalStore) remove(k *localKey) {
	s.heapRemove(k.heapIndex)
	sh := s.shard(k.key)
	delete(sh.m, k.key)
	s.keys--
	// A map keeps the size of its peak: make a new one when it has shrunk to a quarter, so
	// that memory goes back after a burst of users. The copy is at most a quarter of one
	// shard's peak, paid for by the three quarters removed since.
	if sh.peak >= 256 && len(sh.m) < sh.peak/4 {
		m := make(map[string]*localKey, len(sh.m))
		for key, v := range sh.m {
			m[key] = v
		}
		sh.m, sh.peak = m, len(m)
	}
}

// removeExpired removes up to limit expired keys from the top of the heap and returns how
// many it removed.
func (s *LocalStore) removeExpired(nowMS int64, limit int) int {
	n := 0
	for n < limit && len(s.expiry) > 0 && s.expiry[0].expireMS < nowMS {
		s.remove(s.expiry[0].k)
		n++
	}
	if c := cap(s.expiry); c > 1024 && len(s.expiry) < c/4 {
		s.expiry = append(make([]heapEntry, 0, 2*len(s.expiry)), s.expiry...)
	}
	return n
}

// The expiry heap: a binary min-heap on expireMS, each key knowing its index.

func (s *LocalStore) heapPush(k *localKey) {
	k.heapIndex = len(s.expiry)
	s.expiry = append(s.expiry, heapEntry{expireMS: k.expireMS, k: k})
	s.heapUp(k.heapIndex)
}

func (s *LocalStore) heapRemove(i int) {
	last := len(s.expiry) - 1
	if i != last {
		s.heapSwap(i, last)
	}
	s.expiry[last] = heapEntry{}
	s.expiry = s.expiry[:last]
	if i != last {
		s.heapFix(i)
	}
}

func (s *LocalStore) heapFix(i int) {
	if !s.heapUp(i) {
		s.heapDown(i)
	}
}

func (s *LocalStore) heapUp(i int) bool {
	moved := false
	for i > 0 {
		parent := (i - 1) / 2
		if s.expiry[parent].expireMS <= s.expiry[i].expireMS {
			break
		}
		s.heapSwap(i, parent)
		i, moved = parent, true
	}
	return moved
}

func (s *LocalStore) heapDown(i int) {
	n := len(s.expiry)
	for {
		least := i
		if l := 2*i + 1; l < n && s.expiry[l].expireMS < s.expiry[least].expireMS {
			least = l
		}
		if r := 2*i + 2; r < n && s.expiry[r].expireMS < s.expiry[least].expireMS {
			least = r
		}
		if least == i {
			return
		}
		s.heapSwap(i, least)
		i = least
	}
}

func (s *LocalStore) heapSwap(i, j int) {
	s.expiry[i], s.expiry[j] = s.expiry[j], s.expiry[i]
	s.expiry[i].k.heapIndex = i
	s.expiry[j].k.heapIndex = j
}
