package ratelimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// ---------------------------------------------------------------------------------------
// The differential test: the Go port against tokenbucket.lua, step by step.

// diffStep is one step of a differential run: let virtual time pass, then either call the
// script or (edge cases) give a key the same stored value in both stores.
type diffStep struct {
	advance time.Duration // negative: the clock steps back
	seed    *diffSeed
	keys    []string
	args    []bucketArgs
}

// diffSeed is a stored value (level, now, period; encodeStored), put in both stores: a level that the
// next call rescales to a new period where doubles and exact division disagree.
type diffSeed struct {
	key           string
	level, period int64
}

// rescaleEdges are levels and periods (level, old period, new period, all µs) where the
// script's math.floor(level / p * period) is one below the exact ⌊level × period / p⌋ (found
// by a search): a port in exact integer arithmetic differs from the script on each.
var rescaleEdges = [][3]int64{
	{5968, 36896, 94546}, {16380, 28656, 88356}, {5148, 8604, 2390}, {45605, 87024, 24864}, {1620, 2376, 21340},
}

// diffSteps generates n random steps over a pool of six keys, after the rescale edges.
func diffSteps(rng *rand.Rand, n int) []diffStep {
	var steps []diffStep
	for i, e := range rescaleEdges {
		key := "edge:" + strconv.Itoa(i)
		steps = append(steps,
			diffStep{seed: &diffSeed{key: key, level: e[0], period: e[1]}},
			diffStep{keys: []string{key}, args: []bucketArgs{{maxTokens: 1, period: e[2], cost: 0}}})
	}
	pool := []string{"k:a", "k:b", "k:c", "k:d", "k:e", "k:f"}
	cfg := map[string]bucketArgs{}
	for _, k := range pool {
		cfg[k] = randomBucket(rng)
	}
	for range n {
		s := diffStep{advance: randomAdvance(rng)}
		perm := rng.Perm(len(pool))
		for _, i := range perm[:1+rng.IntN(4)] {
			k := pool[i]
			if rng.IntN(25) == 0 { // the config changes under a live key
				c := randomBucket(rng)
				switch rng.IntN(3) {
				case 0: // a new period only
					c.maxTokens = min(cfg[k].maxTokens, maxExact/c.period)
				case 1: // a new capacity only
					c.period = cfg[k].period
					c.maxTokens = max(1, min(c.maxTokens, maxExact/c.period))
				}
				cfg[k] = c
			}
			b := cfg[k]
			b.cost = randomCost(rng, b.maxTokens)
			s.keys, s.args = append(s.keys, k), append(s.args, b)
		}
		if len(s.keys) > 1 && rng.IntN(100) == 0 {
			s.keys[1] = s.keys[0] // the same key twice: outside the limiter's contract, but the script's behaviour all the same
		}
		steps = append(steps, s)
	}
	return steps
}

// randomBucket is a bucket from one of several classes: small and fast, up to an hour, at the
// CRD's bound (maxTokens × (period in ms + 1) ≤ 9007199254740, levels near 2^53), and periods
// under a millisecond (below the CRD's minimum, inside the script's domain).
func randomBucket(rng *rand.Rand) bucketArgs {
	switch c := rng.IntN(10); {
	case c < 5:
		return bucketArgs{maxTokens: 1 + rng.Int64N(10), period: 1000 + rng.Int64N(10_000_000)}
	case c < 8:
		return bucketArgs{maxTokens: 1 + rng.Int64N(1000), period: 1000 + rng.Int64N(3_600_000_000)}
	case c < 9:
		periodMS := 1 + rng.Int64N(31_536_000_000) // up to 8760 h
		m := max(1, min(9007199254740/(periodMS+1), math.MaxInt32))
		return bucketArgs{maxTokens: m - rng.Int64N((m+9)/10), period: periodMS*1000 + rng.Int64N(1000)}
	default:
		return bucketArgs{maxTokens: 1 + rng.Int64N(5), period: 1 + rng.Int64N(999)}
	}
}

// randomCost is mostly a call's 1 to 3 tokens, sometimes a batch's summed cost up to the
// capacity, sometimes 0.
func randomCost(rng *rand.Rand, maxTokens int64) int64 {
	switch c := rng.IntN(20); {
	case c == 0:
		return 0
	case c < 3:
		return maxTokens
	case c < 6:
		return rng.Int64N(maxTokens + 1)
	}
	return 1 + rng.Int64N(min(maxTokens, 3))
}

// randomAdvance is mostly short, sometimes long enough for keys to expire, sometimes zero,
// and now and then a step back of the clock.
func randomAdvance(rng *rand.Rand) time.Duration {
	us := time.Microsecond
	switch c := rng.IntN(100); {
	case c < 35:
		return time.Duration(rng.Int64N(1000)) * us
	case c < 65:
		return time.Duration(rng.Int64N(100_000)) * us
	case c < 85:
		return time.Duration(rng.Int64N(10_000_000)) * us
	case c < 93:
		return time.Duration(rng.Int64N(int64(2 * time.Hour)))
	case c < 97:
		return 0
	}
	return -time.Duration(1+rng.Int64N(int64(time.Hour/time.Millisecond))) * time.Millisecond
}

// scriptSide is tokenbucket.lua in a Redis, with the clock the harness moves and a local
// store whose clock follows it.
type scriptSide struct {
	local  *LocalStore
	setNow func(t time.Time) // the local store's clock
	// realClock: the script's store runs on its own clock (a real redis-server), which the
	// harness reads but cannot stop. Keys near their expiry are then dropped from both stores
	// where the moment of expiry matters (see compareWithScript), and a key may be held by
	// one store only if it is full.
	realClock bool
	// expireAt, when set, is a key's expiry time in the script's store (Unix ms, PEXPIRETIME).
	expireAt func(key string) int64
	call     func(keys []string, args []byte) (reply []int64, writes map[string]string, err error)
	advance  func(d time.Duration) // for the script's store and the local store alike
	now      func() int64          // the script's clock now, µs
	keys     func() map[string]string
	del      func(keys ...string)
	seed     func(key string, level, period int64) (at int64)
}

// nearExpiry is how close to its expiry (ms) a key is dropped where the moment of expiry
// matters: 0 on virtual time; on a real clock, more than a call takes.
func (side scriptSide) nearExpiry() int64 {
	if side.realClock {
		return 50
	}
	return 0
}

// diffResult is what a differential run saw.
type diffResult struct {
	mismatch                                         string // the first difference; "" when none
	decisions, admitted, rejected, stepsBack, expiry int
	rescaled                                         int // calls that met a stored key with another period
	oneSided                                         int // keys held by one store only (expired in the other)
	expirySkew                                       int // writes whose expiry Redis's clock put later than TIME's ms
	dropped                                          int // keys near expiry dropped before a config change
	rounded                                          int // rescales where the doubles differ from exact division
}

// compareWithScript runs steps on the script and on the local store and compares, after
// each step, the replies, the writes (value and PX) and every key's value. A key that only
// one store holds must read as a full bucket there: the two remove expired keys at different
// moments (miniredis to the µs, Redis and the local store to the ms, Redis's active expiry
// at random), and a key expires only when full, so that difference is invisible.
func compareWithScript(t *testing.T, side scriptSide, steps []diffStep) diffResult {
	t.Helper()
	var res diffResult
	lastCfg := map[string]bucketArgs{} // the args of each key's last write
	prev := map[string]string{}
	fail := func(i int, s diffStep, format string, a ...interface{}) diffResult {
		res.mismatch = fmt.Sprintf("step %d (advance %s, keys %v, args %+v): ", i, s.advance, s.keys, s.args) + fmt.Sprintf(format, a...)
		return res
	}
	for i, s := range steps {
		if s.advance < 0 {
			// A step back resurrects an expired key that was not removed yet, in Redis as
			// here; the stores remove at different moments, so both first drop the keys
			// only one holds (and those about to expire).
			lua, now := side.keys(), side.now()
			local := localLive(side.local, now/1000+side.nearExpiry())
			for k := range lua {
				if _, ok := local[k]; !ok {
					side.del(k)
				}
			}
			for k := range localLive(side.local, math.MinInt64) {
				if _, ok := local[k]; !ok || lua[k] == "" {
					localDelete(side.local, k)
					side.del(k)
				}
			}
			res.stepsBack++
			prev = side.keys() // what goes from here on expired
		}
		if s.advance != 0 {
			side.advance(s.advance)
		}
		if s.seed != nil {
			at := side.seed(s.seed.key, s.seed.level, s.seed.period)
			localPut(side.local, s.seed.key, s.seed.level, at, s.seed.period, at/1000+int64(time.Hour/time.Millisecond))
			lastCfg[s.seed.key] = bucketArgs{maxTokens: 1, period: s.seed.period}
			prev[s.seed.key] = encodeStored(s.seed.level, at, s.seed.period)
			continue
		}
		if side.realClock {
			// Redis reads keys at the ms its script started, the port at the ms of TIME,
			// read a few µs later: they disagree on a key that expires in the very ms the
			// script starts in, when the two straddle a ms. That is invisible (an expired
			// key is full) unless the config changed: then a stored full bucket, rescaled
			// and refilled at the new rate, and a missing one differ. Such keys, near
			// expiry and under a new config, are dropped from both stores first.
			var near []string
			held := localLive(side.local, math.MinInt64)
			live := localLive(side.local, side.now()/1000+side.nearExpiry())
			for j, k := range s.keys {
				c := lastCfg[k]
				_, isHeld := held[k]
				if _, alive := live[k]; isHeld && !alive && (c.maxTokens != s.args[j].maxTokens || c.period != s.args[j].period) {
					near = append(near, k)
					localDelete(side.local, k)
				}
			}
			if len(near) > 0 {
				side.del(near...)
				res.dropped += len(near)
			}
		}
		var args []byte
		for _, a := range s.args {
			args = appendTriple(args, a.maxTokens, a.period, a.cost)
		}
		want, luaWrites, err := side.call(s.keys, args)
		if err != nil {
			t.Fatalf("step %d: the script: %v", i, err)
		}
		side.setNow(time.UnixMicro(want[1]))          // the script's TIME is the local store's clock
		before := localLive(side.local, want[1]/1000) // what the port reads
		for j, k := range s.keys {
			if level, _, p, ok := decodeStored(before[k]); ok && p != s.args[j].period {
				res.rescaled++
				period := s.args[j].period
				exact := new(big.Int).Mul(big.NewInt(level), big.NewInt(period))
				exact.Quo(exact, big.NewInt(p))
				if f := math.Floor(float64(level) / float64(p) * float64(period)); f < float64(s.args[j].maxTokens*period) && exact.Cmp(big.NewInt(int64(f))) != 0 {
					res.rounded++
				}
			}
		}
		got, err := ScriptReply(script.Run(t.Context(), side.local, s.keys, args))
		if err != nil {
			return fail(i, s, "local store: %v", err)
		}
		res.decisions++
		if diff := cmp.Diff(want, got); diff != "" {
			return fail(i, s, "replies differ (-script +local):\n%s\nbefore the call: script's store (after the previous step) %v, local store %v", diff, prev, before)
		}
		localWrites := map[string]string{}
		if got[0] == 1 {
			res.admitted++
			for j, k := range s.keys {
				v, ttl, ok := side.local.Get(k)
				if !ok {
					return fail(i, s, "local store: %s not written", k)
				}
				localWrites[k] = v + " PX " + strconv.FormatInt(ttl.Milliseconds(), 10)
				lastCfg[k] = s.args[j]
			}
		} else {
			res.rejected++
		}
		if diff := cmp.Diff(luaWrites, localWrites); diff != "" {
			return fail(i, s, "writes differ (-script +local):\n%s", diff)
		}
		if side.expireAt != nil {
			// Redis adds PX (compared above) to its clock as SET reads it, after TIME: the
			// same ms, or a later one when the ms turned in between (or Redis was descheduled
			// on this loaded machine). The local store, whose clock is Redis's TIME, takes
			// TIME's ms; it follows Redis's, so that both keep holding the same keys.
			for k := range localWrites {
				got, want := localExpiry(side.local, k), side.expireAt(k)
				switch {
				case want < 0: // expired meanwhile (a 1 ms TTL on a loaded machine)
				case want < got || want > got+1000:
					return fail(i, s, "%s expires at %d ms in Redis, %d in the local store", k, want, got)
				case want > got:
					localSetExpiry(side.local, k, want)
					res.expirySkew++
				}
			}
		}
		lua, now := side.keys(), side.now()
		local := localLive(side.local, now/1000)
		for _, k := range sortedUnion(lua, local) {
			lv, inLua := lua[k]
			gv, inLocal := local[k]
			switch {
			case inLua && inLocal && lv != gv:
				return fail(i, s, "%s holds %q in the script's store, %q in the local store", k, lv, gv)
			case inLua != inLocal && !side.realClock:
				return fail(i, s, "%s is held by one store only (script %v, local %v)", k, inLua, inLocal)
			case inLua != inLocal:
				res.oneSided++
				v, c := lv+gv, lastCfg[k]
				if StoredLevel(v, true, c.maxTokens, c.period, now) != c.maxTokens*c.period {
					return fail(i, s, "%s is held by one store only (script %v, local %v) and is not full: %q at %d", k, inLua, inLocal, v, now)
				}
			}
		}
		for k := range prev {
			if _, ok := lua[k]; !ok {
				res.expiry++
			}
		}
		prev = lua
	}
	return res
}

func sortedUnion(a, b map[string]string) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// localLive returns the local store's keys that live at nowMS (Redis's rule), with values.
func localLive(s *LocalStore, nowMS int64) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for i := range s.shards {
		for key, k := range s.shards[i].m {
			if nowMS <= k.expireMS {
				out[key] = k.value()
			}
		}
	}
	return out
}

func localDelete(s *LocalStore, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.shard(key).m[key]; k != nil {
		s.remove(k)
	}
}

func localExpiry(s *LocalStore, key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.shard(key).m[key]; k != nil {
		return k.expireMS
	}
	return -1
}

func localSetExpiry(s *LocalStore, key string, expireMS int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.shard(key).m[key]
	k.expireMS = expireMS
	s.expiry[k.heapIndex].expireMS = expireMS
	s.heapFix(k.heapIndex)
}

func localPut(s *LocalStore, key string, level, at, period, expireMS int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.write(key, level, at, period, expireMS)
}

// localShift moves every stored time d into the past (the future when d < 0): to the script
// exactly d of elapsed time. d is whole ms, so expiry times move exactly.
func localShift(s *LocalStore, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.shards {
		for _, k := range s.shards[i].m {
			k.at -= d.Microseconds()
			k.expireMS -= d.Milliseconds()
			s.expiry[k.heapIndex].expireMS = k.expireMS
		}
	}
}

// miniredisSide runs the script on miniredis on virtual time (SetTime with ClockTTL: TIME
// and TTLs move together), and the local store on the same clock.
func miniredisSide(t *testing.T, local *LocalStore, setNow func(time.Time)) scriptSide {
	mr := miniredis.RunT(t)
	now := miniredisEpoch
	mr.SetTime(now)
	mr.ClockTTL(true)
	setNow(now)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return scriptSide{
		local:  local,
		setNow: setNow,
		call: func(keys []string, args []byte) ([]int64, map[string]string, error) {
			reply, err := ScriptReply(script.Run(t.Context(), c, keys, args))
			if err != nil {
				return nil, nil, err
			}
			writes := map[string]string{}
			if reply[0] == 1 {
				// The clock has not moved since the call: the TTL is the PX the script gave.
				for _, k := range keys {
					if _, seen := writes[k]; seen {
						continue // the same key twice: its TTL is already Redis's
					}
					v, err := mr.Get(k)
					if err != nil {
						return nil, nil, fmt.Errorf("GET %s: %w", k, err)
					}
					ttl := mr.TTL(k)
					if ttl%time.Millisecond != 0 {
						return nil, nil, fmt.Errorf("TTL of %s is %s, not whole ms", k, ttl)
					}
					writes[k] = v + " PX " + strconv.FormatInt(ttl.Milliseconds(), 10)
					// miniredis expires a key to the ns, PX after the write; Redis keeps it
					// through the ms of its expiry time (the write's ms + PX), as the local
					// store does: give miniredis Redis's expiry instant.
					mr.SetTTL(k, ttl+time.Millisecond-time.Duration(reply[1]%1000)*time.Microsecond)
				}
			}
			return reply, writes, nil
		},
		advance: func(d time.Duration) {
			if d < 0 {
				// Redis keeps an absolute expiry time, which a step back of the clock leaves
				// further away; miniredis keeps a remaining duration: lengthen it as Redis's
				// would be.
				for _, k := range mr.Keys() {
					mr.SetTTL(k, mr.TTL(k)-d)
				}
			}
			now = now.Add(d)
			mr.SetTime(now)
			setNow(now)
		},
		now: func() int64 { return now.UnixMicro() },
		keys: func() map[string]string {
			out := map[string]string{}
			for _, k := range mr.Keys() {
				if v, err := mr.Get(k); err == nil {
					out[k] = v
				}
			}
			return out
		},
		del: func(keys ...string) {
			for _, k := range keys {
				mr.Del(k)
			}
		},
		seed: func(key string, level, period int64) int64 {
			at := now.UnixMicro()
			if err := mr.Set(key, encodeStored(level, at, period)); err != nil {
				t.Fatal(err)
			}
			// The local store expires it at its ms + 1 h; miniredis at the same instant.
			mr.SetTTL(key, time.Hour+time.Duration(at%1000)*-time.Microsecond+time.Millisecond)
			return at
		},
	}
}

// realSide runs the script on a real redis-server. Its TIME cannot be set: each call runs on
// Redis first, and the local store then decides at the time Redis reported. Virtual time
// passes by shifting every stored time and expiry into the past (the future, for a step
// back) in both stores, by whole ms. The script's writes are read from MONITOR, so their PX
// is compared exactly, whatever Redis's clock did since.
func realSide(t *testing.T, srv *testredis.Server, local *LocalStore, setNow func(time.Time)) scriptSide {
	c := srv.Client(t)
	ctx := context.Background()
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
	mon := startMonitor(t, srv.Addr)
	marker := 0
	redisNow := func() int64 {
		tm, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatalf("TIME: %v", err)
		}
		return tm.UnixMicro()
	}
	keys := func() map[string]string {
		names, err := c.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatalf("KEYS: %v", err)
		}
		out := map[string]string{}
		if len(names) == 0 {
			return out
		}
		vals, err := c.MGet(ctx, names...).Result()
		if err != nil {
			t.Fatalf("MGET: %v", err)
		}
		for i, v := range vals {
			if s, ok := v.(string); ok {
				out[names[i]] = s
			}
		}
		return out
	}
	return scriptSide{
		local:     local,
		setNow:    setNow,
		realClock: true,
		expireAt: func(key string) int64 {
			exp, err := c.Do(ctx, "PEXPIRETIME", key).Int64()
			if err != nil {
				t.Fatalf("PEXPIRETIME: %v", err)
			}
			return exp
		},
		call: func(keyNames []string, args []byte) ([]int64, map[string]string, error) {
			reply, err := ScriptReply(script.Run(ctx, c, keyNames, args))
			if err != nil {
				return nil, nil, err
			}
			marker++
			m := "sync-" + strconv.Itoa(marker)
			if err := c.Echo(ctx, m).Err(); err != nil {
				return nil, nil, err
			}
			sets, err := mon.until(m)
			if err != nil {
				return nil, nil, err
			}
			writes := map[string]string{}
			for _, s := range sets {
				if len(s) != 5 || !strings.EqualFold(s[3], "PX") {
					return nil, nil, fmt.Errorf("the script sent SET %q", s[1:])
				}
				writes[s[1]] = s[2] + " PX " + s[4]
			}
			return reply, writes, nil
		},
		advance: func(d time.Duration) {
			d = d.Truncate(time.Millisecond)
			if d == 0 {
				return
			}
			for k, v := range keys() {
				level, at, period, ok := decodeStored(v)
				if !ok {
					t.Fatalf("%s holds %q: not a value the script writes", k, v)
				}
				exp, err := c.Do(ctx, "PEXPIRETIME", k).Int64()
				if err != nil || exp < 0 {
					continue // gone meanwhile
				}
				if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.SetArgs(ctx, k, encodeStored(level, at-d.Microseconds(), period), redis.SetArgs{KeepTTL: true})
					p.PExpireAt(ctx, k, time.UnixMilli(exp-d.Milliseconds()))
					return nil
				}); err != nil {
					t.Fatalf("shifting %s: %v", k, err)
				}
				// PEXPIREAT deletes a key whose new time is not after Redis's current ms,
				// although a key lives through the ms of its expiry time: the local store
				// drops it too (it was full: it would expire within the ms).
				if n, err := c.Exists(ctx, k).Result(); err != nil || n == 0 {
					localDelete(local, k)
				}
			}
			localShift(local, d)
		},
		now:  redisNow,
		keys: keys,
		del: func(keys ...string) {
			if err := c.Del(ctx, keys...).Err(); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		},
		seed: func(key string, level, period int64) int64 {
			at := redisNow()
			// Expire at the local store's time: its ms + 1 h.
			if err := c.Set(ctx, key, encodeStored(level, at, period), 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.PExpireAt(ctx, key, time.UnixMilli(at/1000+int64(time.Hour/time.Millisecond))).Err(); err != nil {
				t.Fatal(err)
			}
			return at
		},
	}
}

// monitor reads a redis-server's MONITOR feed, which shows the commands scripts run ("[0
// lua]") with their arguments as sent.
type monitor struct {
	conn net.Conn
	r    *bufio.Reader
}

func startMonitor(t *testing.T, addr string) *monitor {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("MONITOR: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	m := &monitor{conn: conn, r: bufio.NewReader(conn)}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatalf("MONITOR: %v", err)
	}
	if line, err := m.r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", line, err)
	}
	return m
}

// until returns the SETs scripts ran (their arguments) before the ECHO of marker.
func (m *monitor) until(marker string) ([][]string, error) {
	var sets [][]string
	_ = m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := m.r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("MONITOR: %w", err)
		}
		source, args, err := parseMonitorLine(strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n"))
		if err != nil {
			return nil, err
		}
		switch {
		case len(args) == 2 && strings.EqualFold(args[0], "echo") && args[1] == marker:
			return sets, nil
		case strings.HasSuffix(source, " lua") && len(args) > 0 && strings.EqualFold(args[0], "SET"):
			sets = append(sets, args)
		}
	}
}

// parseMonitorLine splits `1796011991.050202 [0 lua] "SET" "k" "5"` into its source ("0
// lua") and arguments (Redis quotes them with the escapes strconv.Unquote reads).
func parseMonitorLine(line string) (string, []string, error) {
	open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return "", nil, fmt.Errorf("MONITOR line %q", line)
	}
	source, rest := line[open+1:end], line[end+1:]
	var args []string
	for rest = strings.TrimLeft(rest, " "); rest != ""; rest = strings.TrimLeft(rest, " ") {
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' {
				i++
			}
		}
		if rest[0] != '"' || i >= len(rest) {
			return "", nil, fmt.Errorf("MONITOR line %q", line)
		}
		a, err := strconv.Unquote(rest[:i+1])
		if err != nil {
			return "", nil, fmt.Errorf("MONITOR line %q: %w", line, err)
		}
		args, rest = append(args, a), rest[i+1:]
	}
	return source, args, nil
}

// localClock is a settable clock for a local store.
type localClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *localClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *localClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *localClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestLocalStoreMatchesScript compares the Go port with tokenbucket.lua on miniredis
// (virtual time) and on a real redis-server (its own clock): random decisions over six keys
// with one to four keys each, random capacities and periods (up to the CRD's bound, levels
// near 2^53), costs of single calls and of batches, configs changed under live keys, time
// moving forward by µs to hours and stepping back, and the rescale edges where doubles and
// exact division disagree. After every step the replies, the writes (value and PX) and every
// key must be equal.
func TestLocalStoreMatchesScript(t *testing.T) {
	const sequences, steps = 8, 1000
	real := testredis.Start(t)
	for _, backend := range []string{"miniredis", "redis-server"} {
		t.Run(backend, func(t *testing.T) {
			var total diffResult
			for seq := range sequences {
				clock := &localClock{}
				local := NewLocalStore(LocalOptions{Now: clock.Now})
				side := miniredisSide
				if backend == "redis-server" {
					side = func(t *testing.T, l *LocalStore, set func(time.Time)) scriptSide { return realSide(t, real, l, set) }
				}
				r := compareWithScript(t, side(t, local, clock.Set), diffSteps(rand.New(rand.NewPCG(uint64(seq), 42)), steps))
				if r.mismatch != "" {
					t.Fatalf("sequence %d: %s", seq, r.mismatch)
				}
				total.decisions += r.decisions
				total.admitted += r.admitted
				total.rejected += r.rejected
				total.stepsBack += r.stepsBack
				total.expiry += r.expiry
				total.rescaled += r.rescaled
				total.oneSided += r.oneSided
				total.rounded += r.rounded
				total.expirySkew += r.expirySkew
				total.dropped += r.dropped
			}
			t.Logf("%s: %d decisions equal (%d admitted, %d rejected), %d steps back, %d keys expired, %d stored levels rescaled to a new period (%d where doubles and exact division differ), %d times a (full) key was held by one store only; %d writes where Redis's SET read a later ms than TIME, %d keys dropped near expiry before a config change",
				backend, total.decisions, total.admitted, total.rejected, total.stepsBack, total.expiry, total.rescaled, total.rounded, total.oneSided, total.expirySkew, total.dropped)
			// The sequences must exercise what they claim, else equality proves little.
			if total.admitted == 0 || total.rejected == 0 || total.stepsBack == 0 || total.expiry == 0 || total.rounded < len(rescaleEdges) {
				t.Errorf("the sequences do not exercise every path: %+v", total)
			}
		})
	}
}

// TestLocalStoreComparisonCatchesMutants: the same comparison reports ports that are wrong by
// a little: a refill one µs short, a rescale in exact integer arithmetic (right in the
// rationals, not what the script computes), a TTL one ms short.
func TestLocalStoreComparisonCatchesMutants(t *testing.T) {
	real := testredis.Start(t)
	cases := map[string]struct {
		reason string
		mutate func(s *LocalStore)
	}{
		"RefillShortByOneMicrosecond": {
			reason: "A refill that counts one µs less than elapsed.",
			mutate: func(s *LocalStore) {
				s.levelFn = func(k *localKey, maxTokens, period, nowUS int64) int64 {
					if k != nil && nowUS > k.at {
						nowUS--
					}
					return luaLevel(k, maxTokens, period, nowUS)
				}
			},
		},
		"ExactRescale": {
			reason: "A rescale in exact integer arithmetic: ⌊level × period / p⌋.",
			mutate: func(s *LocalStore) {
				s.levelFn = func(k *localKey, maxTokens, period, nowUS int64) int64 {
					if k != nil && k.period != period {
						exact := new(big.Int).Mul(big.NewInt(k.level), big.NewInt(period))
						exact.Quo(exact, big.NewInt(k.period))
						level := min2(exact, big.NewInt(maxTokens*period))
						rescaled := *k
						rescaled.level, rescaled.period = level.Int64(), period
						return luaLevel(&rescaled, maxTokens, period, nowUS)
					}
					return luaLevel(k, maxTokens, period, nowUS)
				}
			},
		},
		"TTLOneMillisecondShort": {
			reason: "A TTL without the script's + 1 ms.",
			mutate: func(s *LocalStore) {
				s.ttlFn = func(capacity, level, maxTokens int64) int64 { return luaTTL(capacity, level, maxTokens) - 1 }
			},
		},
	}
	for name, tc := range cases {
		for _, backend := range []string{"miniredis", "redis-server"} {
			t.Run(name+"/"+backend, func(t *testing.T) {
				clock := &localClock{}
				local := NewLocalStore(LocalOptions{Now: clock.Now})
				tc.mutate(local)
				var side scriptSide
				if backend == "miniredis" {
					side = miniredisSide(t, local, clock.Set)
				} else {
					side = realSide(t, real, local, clock.Set)
				}
				r := compareWithScript(t, side, diffSteps(rand.New(rand.NewPCG(1, 42)), 600))
				if r.mismatch == "" {
					t.Fatalf("%s\nthe comparison did not catch it in %d decisions", tc.reason, r.decisions)
				}
				t.Logf("caught after %d decisions: %s", r.decisions, firstLine(r.mismatch))
			})
		}
	}
}

func min2(a, b *big.Int) *big.Int {
	if a.Cmp(b) < 0 {
		return a
	}
	return b
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// ---------------------------------------------------------------------------------------
// The limiter on a LocalStore.

// TestLocalStoreLimiter runs the limiter's behaviour table (limiterCases, which TestLimiter
// runs on miniredis and redis-server) on a LocalStore with virtual time. backend_test.go's
// backends are go-redis clients (DBSIZE, KEYS), which a LocalStore is not, so the table runs
// here.
func TestLocalStoreLimiter(t *testing.T) {
	for name, tc := range limiterCases() {
		t.Run(name, func(t *testing.T) {
			clock := &localClock{now: miniredisEpoch}
			s := NewLocalStore(LocalOptions{Now: clock.Now})
			l, err := New(s, "tools", "demo", tc.cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			for i, st := range tc.steps {
				clock.Advance(st.after)
				d, err := l.AllowAll(t.Context(), st.reqs)
				if err != nil {
					t.Fatalf("step %d: AllowAll: %v", i, err)
				}
				if diff := cmp.Diff(st.want, outcomeOf(d, st.want, 0)); diff != "" {
					t.Errorf("%s\nstep %d %+v: -want +got:\n%s", tc.reason, i, st.reqs, diff)
				}
			}
			s.RemoveExpired()
			if got := s.Len(); got != tc.wantKeys {
				t.Errorf("%s\nkeys: want %d, got %d", tc.reason, tc.wantKeys, got)
			}
		})
	}
}

// TestLocalStoreBehaviour: what TestConfigChange, TestClockStepBack and TestTTLCoversRefill
// check on Redis, on a LocalStore.
func TestLocalStoreBehaviour(t *testing.T) {
	type call struct {
		at     time.Duration // since the start; the clock may go back
		bucket *v1alpha1.RateLimitBucket
	}
	type result struct {
		Allowed   bool
		Remaining int64
		TTL       time.Duration
	}
	cases := map[string]struct {
		reason string
		calls  []call
		want   []result
	}{
		"ConfigChange": {
			reason: "A lowered capacity clamps the level; a new period keeps the level's fraction of a token.",
			calls:  []call{{0, bucketOf(100, 100*time.Second)}, {0, bucketOf(5, 5*time.Second)}, {0, bucketOf(5, 500*time.Second)}},
			want: []result{
				{true, 99, 1001 * time.Millisecond},
				{true, 4, 1001 * time.Millisecond},
				{true, 3, 200*time.Second + time.Millisecond},
			},
		},
		"ClockStepBack": {
			reason: "Two tokens, nothing while the clock is an hour behind, one token 5s after the last admitted call.",
			calls: []call{
				{0, bucketOf(2, 10*time.Second)}, {0, bucketOf(2, 10*time.Second)}, {-time.Hour, bucketOf(2, 10*time.Second)},
				{-time.Hour, bucketOf(2, 10*time.Second)}, {5 * time.Second, bucketOf(2, 10*time.Second)},
			},
			want: []result{
				{true, 1, 5001 * time.Millisecond}, {true, 0, 10001 * time.Millisecond},
				{false, 0, time.Hour + 10001*time.Millisecond}, {false, 0, time.Hour + 10001*time.Millisecond},
				{true, 0, 10001 * time.Millisecond},
			},
		},
		"TTLCoversRefill": {
			reason: "5 of 10 tokens taken at 10s each: the key lives until the bucket is full, 50s, plus 1ms.",
			calls:  slices.Repeat([]call{{0, bucketOf(10, 100*time.Second)}}, 5),
			want:   []result{{true, 9, 10001 * time.Millisecond}, {true, 8, 20001 * time.Millisecond}, {true, 7, 30001 * time.Millisecond}, {true, 6, 40001 * time.Millisecond}, {true, 5, 50001 * time.Millisecond}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clock := &localClock{}
			s := NewLocalStore(LocalOptions{Now: clock.Now})
			var got []result
			for _, c := range tc.calls {
				clock.Set(miniredisEpoch.Add(c.at))
				l, err := New(s, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: c.bucket})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				d, err := l.Allow(t.Context(), tool("x", ""))
				if err != nil {
					t.Fatalf("Allow: %v", err)
				}
				_, ttl, _ := s.Get(l.shared.key)
				got = append(got, result{Allowed: d.Allowed, Remaining: d.Buckets[0].Remaining, TTL: ttl})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestLocalStoreScripter: the Scripter methods answer as Redis does for the limiter's script,
// and refuse every other script clearly.
func TestLocalStoreScripter(t *testing.T) {
	args := ScriptArgs(2, 1_000_000, 1)
	cases := map[string]struct {
		reason string
		run    func(ctx context.Context, s *LocalStore) string
		want   string
	}{
		"EvalShaOfTheScript": {
			reason: "EVALSHA of tokenbucket.lua's SHA1 runs the port: admitted, one token left (in token-µs).",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalSha(ctx, script.Hash(), []string{"k"}, args))
			},
			want: "[1 1796000000000000 1000000]",
		},
		"EvalOfTheScript": {
			reason: "EVAL of its source too.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.Eval(ctx, scriptSource, []string{"k"}, args))
			},
			want: "[1 1796000000000000 1000000]",
		},
		"UnknownShaIsNOSCRIPT": {
			reason: "An unknown SHA1 is NOSCRIPT, a redis.Error, so that go-redis's Script.Run falls back to EVAL.",
			run: func(ctx context.Context, s *LocalStore) string {
				err := s.EvalSha(ctx, strings.Repeat("0", 40), []string{"k"}, args).Err()
				return fmt.Sprintf("NOSCRIPT prefix %v: %v", redis.HasErrorPrefix(err, "NOSCRIPT"), err)
			},
			want: "NOSCRIPT prefix true: NOSCRIPT No matching script. Please use EVAL.",
		},
		"OtherScriptThroughRun": {
			reason: "Another script through Script.Run: NOSCRIPT, then EVAL, which says what this store runs.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(redis.NewScript("return 1").Run(ctx, s, []string{"k"}))
			},
			want: "error: ERR local store runs only the limiter's script (tokenbucket.lua), not this one",
		},
		"OtherScriptThroughTheLimiter": {
			reason: "A limiter WithScript (a mutation test's) fails with that error, as a store error.",
			run: func(ctx context.Context, s *LocalStore) string {
				l, err := New(s, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: bucketOf(1, time.Second)}, WithScript("return {1, 0, 0}"))
				if err != nil {
					return err.Error()
				}
				_, err = l.Allow(ctx, tool("x", ""))
				return fmt.Sprintf("request error %v: %v", errors.Is(err, ErrInvalidRequest), err)
			},
			want: "request error false: rate limit script: ERR local store runs only the limiter's script (tokenbucket.lua), not this one",
		},
		"ScriptLoadAndExists": {
			reason: "SCRIPT LOAD of the script gives its SHA1; SCRIPT EXISTS knows it alone; another script cannot be loaded.",
			run: func(ctx context.Context, s *LocalStore) string {
				sha, err := s.ScriptLoad(ctx, scriptSource).Result()
				exists, err2 := s.ScriptExists(ctx, script.Hash(), strings.ToUpper(script.Hash()), "abc").Result()
				_, err3 := s.ScriptLoad(ctx, "return 1").Result()
				return fmt.Sprintf("%v %v %v %v %v", sha == script.Hash(), err, exists, err2, err3)
			},
			want: "true <nil> [true true false] <nil> ERR local store runs only the limiter's script (tokenbucket.lua), not this one",
		},
		"ReadOnlyAdmissionRefused": {
			reason: "EVALSHA_RO: an admission would write, which Redis refuses at the first SET: an error, nothing written.",
			run: func(ctx context.Context, s *LocalStore) string {
				err := s.EvalShaRO(ctx, script.Hash(), []string{"k"}, args).Err()
				_, _, found := s.Get("k")
				return fmt.Sprintf("%v; written %v", err, found)
			},
			want: "ERR Write commands are not allowed from read-only scripts.; written false",
		},
		"ReadOnlyRejectionAnswered": {
			reason: "EVAL_RO of a rejection writes nothing, so Redis answers it; so does this store.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalRO(ctx, scriptSource, []string{"k"}, ScriptArgs(2, 1_000_000, 3)))
			},
			want: "[0 1796000000000000 2000000]",
		},
		"NoKeys": {
			reason: "The script's MGET of no key is an error in Redis.",
			run:    func(ctx context.Context, s *LocalStore) string { return reply(s.EvalSha(ctx, script.Hash(), nil)) },
			want:   "error: ERR wrong number of arguments for 'mget' command",
		},
		"MissingArguments": {
			reason: "Three integers per key.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalSha(ctx, script.Hash(), []string{"a", "b"}, args))
			},
			want: "error: ERR the limiter's script takes one argument of 24 bytes per key: 24 bytes for 2 keys",
		},
		"DecimalArguments": {
			reason: "Arguments are bytes, not the decimal integers earlier versions sent: refused as the script refuses them.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalSha(ctx, script.Hash(), []string{"k"}, "2", "1000000", "1"))
			},
			want: "error: ERR the limiter's script takes one argument of 24 bytes per key: 1 bytes for 1 keys",
		},
		"NotBytes": {
			reason: "An argument that is neither string nor bytes.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalSha(ctx, script.Hash(), []string{"k"}, 1.5))
			},
			want: "error: ERR the limiter's script takes its arguments as bytes, not float64",
		},
		"ZeroTokens": {
			reason: "maxTokens 0 has no meaning (the script would divide by zero in its TTL).",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalSha(ctx, script.Hash(), []string{"k"}, ScriptArgs(0, 1000, 0)))
			},
			want: "error: ERR key 1: maxTokens 0, period 1000 µs, cost 0: want maxTokens ≥ 1, period ≥ 1, cost ≥ 0",
		},
		"AboveTwoToThe53": {
			reason: "Above 2^53 the script's doubles round: refused rather than computed differently.",
			run: func(ctx context.Context, s *LocalStore) string {
				return reply(s.EvalSha(ctx, script.Hash(), []string{"k"}, ScriptArgs(1<<30, 1<<24, 1)))
			},
			want: "error: ERR key 1: maxTokens 1073741824 or cost 1 × period 16777216 µs is above 2^53, where the script's doubles are no longer exact",
		},
		"CanceledContext": {
			reason: "A done context is not run, as a client sends nothing for it.",
			run: func(ctx context.Context, s *LocalStore) string {
				ctx, cancel := context.WithCancel(ctx)
				cancel()
				err := s.EvalSha(ctx, script.Hash(), []string{"k"}, args).Err()
				return fmt.Sprintf("%v; written %v", err, s.Len() > 0)
			},
			want: "context canceled; written false",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewLocalStore(LocalOptions{Now: func() time.Time { return time.UnixMicro(1796000000000000) }})
			if diff := cmp.Diff(tc.want, tc.run(t.Context(), s)); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// reply describes a script call's reply as ScriptReply reads it, or its error.
func reply(cmd *redis.Cmd) string {
	v, err := ScriptReply(cmd)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprint(v)
}

// ---------------------------------------------------------------------------------------
// Concurrency, bounds, memory.

// TestLocalStoreConcurrentEnvelope: 64 goroutines take random costs from shared, per-user and
// per-tool buckets at once. For every bucket, the tokens taken never exceed the token-bucket
// envelope, capacity + rate × elapsed, counted exactly in token-µs on the store's clock
// between the first and the last admission; no reported level is negative. A port that
// releases its lock between the check and the take is caught by the same check.
func TestLocalStoreConcurrentEnvelope(t *testing.T) {
	cases := map[string]struct {
		reason        string
		midTake       func()
		wantViolation bool
	}{
		"Atomic": {reason: "The port: every decision is atomic."},
		"MutantNonAtomicTake": {
			reason:  "A port that lets other decisions run between its check and its take over-admits.",
			midTake: runtime.Gosched, wantViolation: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			violations, admitted, rejected := runEnvelope(t, tc.midTake)
			t.Logf("%d admitted, %d rejected, %d buckets over their envelope", admitted, rejected, len(violations))
			if got := len(violations) > 0; got != tc.wantViolation {
				t.Errorf("%s\nviolation: want %v, got %v: %v", tc.reason, tc.wantViolation, got, violations)
			}
			if admitted == 0 || rejected == 0 {
				t.Errorf("admitted %d, rejected %d: the traffic must do both", admitted, rejected)
			}
		})
	}
}

func runEnvelope(t *testing.T, midTake func()) (violations []string, admitted, rejected int64) {
	const goroutines, decisions = 64, 300
	var tick atomic.Int64
	base := miniredisEpoch.UnixMicro()
	s := NewLocalStore(LocalOptions{Now: func() time.Time { return time.UnixMicro(base + tick.Add(20)) }})
	s.midTake = midTake
	buckets := map[string]bucketArgs{"shared": {maxTokens: 20, period: 10_000}}
	for i := range 8 {
		buckets["user:"+strconv.Itoa(i)] = bucketArgs{maxTokens: 4, period: 5_000}
	}
	for i := range 2 {
		buckets["tool:"+strconv.Itoa(i)] = bucketArgs{maxTokens: 6, period: 8_000}
	}
	type take struct {
		at, tokenUS int64
	}
	var mu sync.Mutex
	takes := map[string][]take{}
	var negative atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range decisions {
				keys := []string{"shared", "user:" + strconv.Itoa(g%8)}
				if rng.IntN(2) == 0 {
					keys = append(keys, "tool:"+strconv.Itoa(rng.IntN(2)))
				}
				cost := 1 + rng.Int64N(2)
				var args []byte
				for _, k := range keys {
					args = appendTriple(args, buckets[k].maxTokens, buckets[k].period, cost)
				}
				res, err := ScriptReply(script.Run(context.Background(), s, keys, args))
				if err != nil {
					t.Errorf("script: %v", err)
					return
				}
				for _, l := range res[2:] {
					if l < 0 {
						negative.Add(1)
					}
				}
				mu.Lock()
				if res[0] == 1 {
					admitted++
					for _, k := range keys {
						takes[k] = append(takes[k], take{at: res[1], tokenUS: cost * buckets[k].period})
					}
				} else {
					rejected++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for k, ts := range takes {
		b := buckets[k]
		first, last, taken := ts[0].at, ts[0].at, int64(0)
		for _, tk := range ts {
			first, last, taken = min(first, tk.at), max(last, tk.at), taken+tk.tokenUS
		}
		if envelope := b.maxTokens*b.period + (last-first)*b.maxTokens; taken > envelope {
			violations = append(violations, fmt.Sprintf("%s: %d token-µs taken, envelope %d", k, taken, envelope))
		}
	}
	if n := negative.Load(); n > 0 {
		violations = append(violations, fmt.Sprintf("%d negative levels", n))
	}
	slices.Sort(violations)
	return violations, admitted, rejected
}

// TestLocalStoreEviction: past MaxKeys, a new key evicts the key that would be full the
// soonest, never one of the deciding call's own keys; expired keys go first and are not
// evictions.
func TestLocalStoreEviction(t *testing.T) {
	// 10 tokens per 10 s: each token taken keeps a key 1 s longer.
	type call struct {
		after time.Duration
		keys  []string
		cost  int64
	}
	cases := map[string]struct {
		reason        string
		maxKeys       int
		calls         []call
		wantKeys      []string
		wantEvictions int64
	}{
		"SoonestFull": {
			reason:   "a (full in 10s), b (1s), c (5s): a fourth key evicts b.",
			maxKeys:  3,
			calls:    []call{{0, []string{"a"}, 10}, {0, []string{"b"}, 1}, {0, []string{"c"}, 5}, {0, []string{"d"}, 1}},
			wantKeys: []string{"a", "c", "d"}, wantEvictions: 1,
		},
		"NotTheCallsOwnKeys": {
			reason:   "a (1s) is the soonest full but is one of the call's keys: b goes.",
			maxKeys:  2,
			calls:    []call{{0, []string{"a"}, 1}, {0, []string{"b"}, 5}, {0, []string{"a", "c"}, 1}},
			wantKeys: []string{"a", "c"}, wantEvictions: 1,
		},
		"ExpiredFirst": {
			reason:   "a expired (full since 1s): removed for c, not an eviction.",
			maxKeys:  2,
			calls:    []call{{0, []string{"a"}, 1}, {0, []string{"b"}, 5}, {2 * time.Second, []string{"c"}, 1}},
			wantKeys: []string{"b", "c"}, wantEvictions: 0,
		},
		"RejectionCreatesNothing": {
			reason:   "A rejected call writes nothing, so it evicts nothing.",
			maxKeys:  1,
			calls:    []call{{0, []string{"a"}, 1}, {0, []string{"b", "a"}, 10}},
			wantKeys: []string{"a"}, wantEvictions: 0,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clock := &localClock{now: miniredisEpoch}
			s := NewLocalStore(LocalOptions{Now: clock.Now, MaxKeys: tc.maxKeys})
			for _, c := range tc.calls {
				clock.Advance(c.after)
				var args []byte
				for range c.keys {
					args = appendTriple(args, 10, 10_000_000, c.cost)
				}
				if err := script.Run(t.Context(), s, c.keys, args).Err(); err != nil {
					t.Fatalf("script: %v", err)
				}
				if s.Len() > tc.maxKeys {
					t.Errorf("%d keys held, MaxKeys %d", s.Len(), tc.maxKeys)
				}
			}
			got := slices.Sorted(func(yield func(string) bool) {
				for k := range localLive(s, clock.Now().UnixMilli()) {
					if !yield(k) {
						return
					}
				}
			})
			if diff := cmp.Diff(tc.wantKeys, got); diff != "" {
				t.Errorf("%s\nkeys: -want +got:\n%s", tc.reason, diff)
			}
			if got := s.Evictions(); got != tc.wantEvictions {
				t.Errorf("%s\nevictions: want %d, got %d", tc.reason, tc.wantEvictions, got)
			}
		})
	}
}

// TestLocalStoreBounded: under random traffic of many users the store never holds more than
// MaxKeys; expired keys are removed by the traffic itself (a few per call) and all at once
// by RemoveExpired.
func TestLocalStoreBounded(t *testing.T) {
	clock := &localClock{now: miniredisEpoch}
	s := NewLocalStore(LocalOptions{Now: clock.Now, MaxKeys: 500})
	rng := rand.New(rand.NewPCG(3, 4))
	most := 0
	for range 20_000 {
		clock.Advance(time.Duration(rng.Int64N(2000)) * time.Microsecond)
		user := "user:" + strconv.Itoa(rng.IntN(5000))
		if err := script.Run(t.Context(), s, []string{"shared", user}, ScriptArgs(1_000_000, 1_000_000, 1, 3, 1_000_000+rng.Int64N(10_000_000), 1+rng.Int64N(3))).Err(); err != nil {
			t.Fatalf("script: %v", err)
		}
		most = max(most, s.Len())
	}
	if most > 500 {
		t.Errorf("held up to %d keys, MaxKeys 500", most)
	}
	if s.Evictions() == 0 {
		t.Error("nothing was evicted: the traffic does not test the bound")
	}

	// Short-lived keys, one new one per ms, each full (and expired) 2 ms later: the calls
	// themselves keep the store small.
	s = NewLocalStore(LocalOptions{Now: clock.Now})
	for i := range 10_000 {
		clock.Advance(time.Millisecond)
		if err := script.Run(t.Context(), s, []string{"short:" + strconv.Itoa(i)}, ScriptArgs(1, 1000, 1)).Err(); err != nil {
			t.Fatalf("script: %v", err)
		}
	}
	if got := s.Len(); got > 5 {
		t.Errorf("10000 keys that each expire within 3 ms: %d held at the end, want at most 5", got)
	}

	// Idle: nothing calls, RemoveExpired removes all.
	for i := range 1000 {
		if err := script.Run(t.Context(), s, []string{"idle:" + strconv.Itoa(i)}, ScriptArgs(10, 1_000_000, 1)).Err(); err != nil {
			t.Fatalf("script: %v", err)
		}
	}
	clock.Advance(time.Second)
	before := s.Len()
	removed := s.RemoveExpired()
	if diff := cmp.Diff([2]int{before, 0}, [2]int{removed, s.Len()}); diff != "" {
		t.Errorf("RemoveExpired after every key's TTL: [removed, left] -want +got:\n%s", diff)
	}
}

// TestLocalStoreMemory: 100 000 users take a token each (100 000 keys), then stay idle past
// their TTL; RemoveExpired gives the memory back. It logs the numbers; it asserts only that
// the heap goes back to within a tenth of what the keys took.
func TestLocalStoreMemory(t *testing.T) {
	if testing.Short() && !testenv.InCI() { // CI never skips it, -short or not
		t.Skip("allocates 100 000 keys")
	}
	const users = 100_000
	clock := &localClock{now: miniredisEpoch}
	s := NewLocalStore(LocalOptions{Now: clock.Now})
	l, err := New(s, "tools", "demo", &v1alpha1.RateLimitConfig{PerUser: bucketOf(10, time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, users)
	for i := range ids {
		ids[i] = "user-" + strconv.Itoa(i)
	}
	heap0, rss0 := memNow()
	start := time.Now()
	for _, id := range ids {
		if _, err := l.Allow(t.Context(), tool("x", id)); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	heap1, rss1 := memNow()
	clock.Advance(7 * time.Second) // a token's 6 s, plus a ms: every key expired
	start = time.Now()
	removed := s.RemoveExpired()
	sweep := time.Since(start)
	heap2, rss2 := memNow()
	mb := func(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	t.Logf("%d keys: heap %s → %s (%d B a key), RSS %s → %s; %d decisions in %s (%s each)",
		users, mb(heap0), mb(heap1), (heap1-heap0)/users, mb(rss0), mb(rss1), users, took.Round(time.Millisecond), took/users)
	t.Logf("idle past the TTL: RemoveExpired removed %d keys in %s; heap %s, RSS %s; %d keys left",
		removed, sweep.Round(time.Millisecond), mb(heap2), mb(rss2), s.Len())
	if removed != users || s.Len() != 0 {
		t.Errorf("removed %d, left %d: want %d and 0", removed, s.Len(), users)
	}
	if heap1 < heap0 || heap2 > heap0+(heap1-heap0)/10 {
		t.Errorf("heap %d → %d → %d: not back within a tenth of the growth", heap0, heap1, heap2)
	}
	runtime.KeepAlive(ids)
}

// memNow returns the live heap and the resident set after a collection that returns freed
// memory to the OS.
func memNow() (heap, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			rss = pages * uint64(os.Getpagesize())
		}
	}
	return m.HeapAlloc, rss
}

// BenchmarkLocalStore: one decision through the limiter on a LocalStore, with one and four
// buckets, serial and from every core; with 1 000 and 1 000 000 keys held (what the expiry
// heap costs as it grows); and RemoveExpired of 100 000 expired keys.
//
//	go test ./proxy/ratelimit -run '^$' -bench LocalStore -benchmem
func BenchmarkLocalStore(b *testing.B) {
	generous := bucketOf(1_000_000, time.Second)
	cfgs := []struct {
		name string
		cfg  *v1alpha1.RateLimitConfig
	}{
		{"1key", &v1alpha1.RateLimitConfig{PerUser: generous}},
		{"4keys", &v1alpha1.RateLimitConfig{Shared: generous, PerUser: generous, Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}}}},
	}
	for _, held := range []int{1000, 1_000_000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			s := NewLocalStore(LocalOptions{})
			now := time.Now().UnixMicro()
			for i := range held {
				localPut(s, "held:"+strconv.Itoa(i), 0, now, 1_000_000, now/1000+int64(time.Hour/time.Millisecond)+int64(i))
			}
			runtime.GC()
			for _, c := range cfgs {
				l, err := New(s, "tools", "demo", c.cfg)
				if err != nil {
					b.Fatal(err)
				}
				reqs := make([]Request, 1000)
				for i := range reqs {
					reqs[i] = tool("search", "user-"+strconv.Itoa(i))
				}
				b.Run(c.name, func(b *testing.B) {
					i := 0
					for b.Loop() {
						if _, err := l.Allow(context.Background(), reqs[i%len(reqs)]); err != nil {
							b.Fatal(err)
						}
						i++
					}
				})
				b.Run(c.name+"/parallel", func(b *testing.B) {
					var next atomic.Int64
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := l.Allow(context.Background(), reqs[next.Add(1)%int64(len(reqs))]); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
	// The script alone, without the limiter's work (key building, the user hash, the
	// Decision): what the port itself costs.
	b.Run("script/4keys", func(b *testing.B) {
		s := NewLocalStore(LocalOptions{})
		keys := []string{"a", "b", "c", "d"}
		args := ScriptArgs(1_000_000, 1_000_000, 1, 1_000_000, 1_000_000, 1, 1_000_000, 1_000_000, 1, 1_000_000, 1_000_000, 1)
		ctx := context.Background()
		for b.Loop() {
			if err := s.EvalSha(ctx, scriptSHA, keys, args).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RemoveExpired/100000", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			clock := &localClock{now: miniredisEpoch}
			s := NewLocalStore(LocalOptions{Now: clock.Now})
			for i := range 100_000 {
				localPut(s, "k:"+strconv.Itoa(i), 0, 0, 1, miniredisEpoch.UnixMilli()+int64(i%1000))
			}
			clock.Advance(2 * time.Second)
			b.StartTimer()
			if n := s.RemoveExpired(); n != 100_000 {
				b.Fatalf("removed %d", n)
			}
		}
	})
}
