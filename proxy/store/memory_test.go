package store

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// memClock is a settable clock for the memory store's buckets.
type memClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *memClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *memClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// openMemoryT opens a memory store on clock, closed when the test ends.
func openMemoryT(t *testing.T, opt Options, clock *memClock) *redisStore {
	t.Helper()
	opt, err := opt.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := newMemoryStore(opt, ratelimit.LocalOptions{Now: clock.Now})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var tokenBucket = redis.NewScript(ratelimit.ScriptSource())

// TestMemoryExpiryExact: each key expires at its own time, to the ms (it lives through the
// ms of its expiry time, as in Redis), never early, whenever the sweeps run. The store that
// ran miniredis needed its sweeper to give back, to keys written between two sweeps, the
// part of the interval before their write (FastForward took the same time off every TTL);
// the local store keeps an absolute expiry time per key, so there is nothing to compensate:
// a sweep removes only keys already expired, and a key written just before a sweep keeps its
// whole TTL.
func TestMemoryExpiryExact(t *testing.T) {
	t0 := time.UnixMilli(1796000000000)
	clock := &memClock{now: t0}
	s := openMemoryT(t, Options{MemorySweepInterval: time.Hour}, clock) // sweeps only when told
	ctx := context.Background()
	// One token per period, taken: the key lives for the period (its time to full), plus 1ms.
	take := func(key string, period time.Duration) {
		if err := tokenBucket.Run(ctx, s, []string{key}, ratelimit.ScriptArgs(1, period.Microseconds(), 1)).Err(); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	type snapshot struct {
		At   time.Duration
		TTLs map[string]time.Duration // the keys that read as present, and their TTL
		Held int                      // the keys still in memory
	}
	var got []snapshot
	sweepAt := func(at time.Duration) {
		clock.Set(t0.Add(at))
		s.mem.local.RemoveExpired() // what the sweeper runs
		snap := snapshot{At: at, TTLs: map[string]time.Duration{}, Held: s.mem.local.Len()}
		for _, k := range []string{"old", "late"} {
			if _, ttl, ok := s.mem.local.Get(k); ok {
				snap.TTLs[k] = ttl
			}
		}
		got = append(got, snap)
	}

	take("old", 5999*time.Millisecond) // at 0: TTL 6s
	clock.Set(t0.Add(4900 * time.Millisecond))
	take("late", 999*time.Millisecond) // at 4.9s: TTL 1s
	sweepAt(5 * time.Second)
	sweepAt(5950 * time.Millisecond)
	sweepAt(6 * time.Second)
	sweepAt(6001 * time.Millisecond)

	ms := time.Millisecond
	want := []snapshot{
		// "late" keeps 900ms, its true remaining time: the sweep did not touch it.
		{At: 5 * time.Second, TTLs: map[string]time.Duration{"old": 1000 * ms, "late": 900 * ms}, Held: 2},
		// "late" lived through ms 5900 and is gone: removed by this sweep.
		{At: 5950 * ms, TTLs: map[string]time.Duration{"old": 50 * ms}, Held: 1},
		// "old" lives through ms 6000, its expiry time, and not a ms more.
		{At: 6 * time.Second, TTLs: map[string]time.Duration{"old": 0}, Held: 1},
		{At: 6001 * ms, TTLs: map[string]time.Duration{}, Held: 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keys after each sweep: -want +got:\n%s", diff)
	}
}

// TestMemoryStore: the embedded store decides, expires a bucket's key once it is full (and
// not before), removes it within a sweep interval, never touches the network, makes its
// decision whatever the caller's context, and stops on Close.
func TestMemoryStore(t *testing.T) {
	const interval = 50 * time.Millisecond
	s, err := Open(context.Background(), &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory}, "", Options{MemorySweepInterval: interval, Breaker: BreakerOptions{Failures: 1}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	rs := s.(*redisStore)
	ctx := context.Background()
	l, err := ratelimit.New(s, "tools", "memory", &v1alpha1.RateLimitConfig{PerUser: bucket(1, 200*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	allowCtx := func(ctx context.Context, user string) string {
		d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: user})
		switch {
		case err != nil:
			return errLabel(err)
		case d.Allowed:
			return "allowed"
		default:
			return "rejected"
		}
	}
	allow := func() string { return allowCtx(ctx, "alice") }

	type result struct {
		First, Second, AfterExpiry string
		KeysAfterFirst             int
		ExpiredNotEarly            bool // the key read as present for at least its TTL (time to full + 1ms)
		RemovedWithinInterval      bool // and left memory within a sweep interval (and some slack) of it
		PastDeadline               string
		Connections                uint32
		PingAfterClose             string
		SweeperStopped             bool
	}
	var got result
	start := time.Now()
	got.First = allow()
	keys := rs.mem.local.Keys()
	got.KeysAfterFirst = len(keys)
	got.Second = allow()
	if len(keys) != 1 {
		t.Fatalf("keys after one call: %v", keys)
	}
	present := func() bool { _, _, ok := rs.mem.local.Get(keys[0]); return ok }
	for present() && time.Since(start) < 2*time.Second {
		time.Sleep(time.Millisecond)
	}
	lived := time.Since(start)
	for rs.mem.local.Len() > 0 && time.Since(start) < 2*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	removed := time.Since(start)
	got.ExpiredNotEarly = lived >= 201*time.Millisecond
	got.RemovedWithinInterval = removed < 202*time.Millisecond+interval+200*time.Millisecond
	t.Logf("the bucket's key (TTL 201ms) read as gone after %s and left memory after %s (sweep every %s)",
		lived.Round(time.Millisecond), removed.Round(time.Millisecond), interval)
	got.AfterExpiry = allow()

	// With a real Redis a call past its deadline fails and counts for the breaker (here
	// opened by one failure); the embedded store decides in a µs, so it decides.
	past, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	got.PastDeadline = allowCtx(past, "bob") + ", " + allowCtx(past, "bob") + ", " + allowCtx(ctx, "carol")
	got.Connections = rs.client.PoolStats().TotalConns + rs.client.PoolStats().Misses

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	got.PingAfterClose = label(s.Ping(ctx))
	select {
	case <-rs.mem.stopped:
		got.SweeperStopped = true
	default:
	}

	want := result{
		First: "allowed", Second: "rejected", AfterExpiry: "allowed",
		KeysAfterFirst:  1,
		ExpiredNotEarly: true, RemovedWithinInterval: true,
		PastDeadline:   "allowed, rejected, allowed",
		Connections:    0,
		PingAfterClose: "error",
		SweeperStopped: true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("memory store: -want +got:\n%s", diff)
	}
}

// TestMemoryConcurrentDecisions: 64 goroutines × 25 calls on a bucket of 1000 tokens that does
// not refill within the test admit exactly 1000: each decision through the store is atomic.
func TestMemoryConcurrentDecisions(t *testing.T) {
	s := openT(t, nil, "memory://", Options{})
	l, err := ratelimit.New(s, "tools", "concurrent", &v1alpha1.RateLimitConfig{Shared: bucket(1000, 24*time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				d, err := l.Allow(context.Background(), ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: "u" + strconv.Itoa(g)})
				if err != nil {
					t.Errorf("Allow: %v", err)
					return
				}
				if d.Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := admitted.Load(); got != 1000 {
		t.Errorf("admitted %d of 1600 calls on a bucket of 1000: want exactly 1000", got)
	}
}

// BenchmarkMemoryDecision measures one decision through the memory store, with one and four
// buckets, serial and from every core, beside the store it replaced in the same run: miniredis
// on loopback behind the same go-redis client settings and breaker (without the old
// sweeper's per-call key tracking, which cost little next to miniredis).
//
//	go test ./proxy/store -run '^$' -bench MemoryDecision -benchmem
func BenchmarkMemoryDecision(b *testing.B) {
	opt, err := Options{}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	local := newMemoryStore(opt, ratelimit.LocalOptions{})
	defer func() { _ = local.Close() }()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		b.Fatal(err)
	}
	defer mr.Close()
	slow := opt
	slow.Timeout = time.Second // a throughput measurement: no timeouts under a loaded machine
	o := clientOptions(slow)
	o.Addrs = []string{mr.Addr()}
	client := redis.NewClient(o.Simple())
	client.AddHook(noRetryHook{})
	old := newStore(client, slow)
	defer func() { _ = old.Close() }()

	generous := bucket(1_000_000, time.Second)
	cfgs := []struct {
		name string
		cfg  *v1alpha1.RateLimitConfig
	}{
		{"1key", &v1alpha1.RateLimitConfig{PerUser: generous}},
		{"4keys", &v1alpha1.RateLimitConfig{Shared: generous, PerUser: generous, Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}}}},
	}
	reqs := make([]ratelimit.Request, 1000)
	for i := range reqs {
		reqs[i] = ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: "user-" + strconv.Itoa(i)}
	}
	for _, impl := range []struct {
		name string
		s    Store
	}{{"local", local}, {"miniredis", old}} {
		for _, c := range cfgs {
			l, err := ratelimit.New(impl.s, "tools", "bench", c.cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(impl.name+"/"+c.name, func(b *testing.B) {
				i := 0
				for b.Loop() {
					if _, err := l.Allow(context.Background(), reqs[i%len(reqs)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(impl.name+"/"+c.name+"/parallel", func(b *testing.B) {
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
	}
}
