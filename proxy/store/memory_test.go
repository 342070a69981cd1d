package store

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// TestMemorySweepNeverExpiresEarly drives the sweeper with a clock of its own. A key
// written just before a sweep keeps its whole TTL: it expires at most one interval late,
// never early. The control is FastForward alone, as a naive sweeper would call it: the same
// key goes 900ms before its time.
func TestMemorySweepNeverExpiresEarly(t *testing.T) {
	s := openT(t, nil, "memory://", Options{MemorySweepInterval: time.Hour}) // sweeps only when told
	m := s.mem
	t0 := time.Now()
	clock := t0
	m.sweepMu.Lock()
	m.now = func() time.Time { return clock }
	m.last = t0
	m.sweepMu.Unlock()

	naive := miniredis.NewMiniRedis() // the control: no compensation
	naiveLast := t0

	ctx := context.Background()
	set := func(key string, ttl time.Duration) {
		if err := s.Eval(ctx, "return redis.call('SET', KEYS[1], 'v', 'PX', ARGV[1])", []string{key}, ttl.Milliseconds()).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if err := naive.Set(key, "v"); err != nil {
			t.Fatal(err)
		}
		naive.SetTTL(key, ttl)
	}
	ttls := func(srv *miniredis.Miniredis) map[string]time.Duration {
		got := map[string]time.Duration{}
		for _, k := range srv.Keys() {
			got[k] = srv.TTL(k)
		}
		return got
	}
	type snapshot struct {
		At    time.Duration
		Store map[string]time.Duration
		Naive map[string]time.Duration
	}
	var got []snapshot
	sweepAt := func(at time.Duration) {
		clock = t0.Add(at)
		m.sweep()
		naive.FastForward(clock.Sub(naiveLast))
		naiveLast = clock
		got = append(got, snapshot{At: at, Store: ttls(m.srv), Naive: ttls(naive)})
	}

	set("old", 6*time.Second) // at 0: expires at 6s
	clock = t0.Add(4900 * time.Millisecond)
	set("late", time.Second) // at 4.9s: expires at 5.9s
	sweepAt(5 * time.Second)
	sweepAt(5950 * time.Millisecond)
	sweepAt(6 * time.Second)

	ms := time.Millisecond
	want := []snapshot{
		// The store: "late" keeps 900ms, its true remaining time. Naive: gone 900ms early.
		{At: 5 * time.Second, Store: map[string]time.Duration{"old": 1000 * ms, "late": 900 * ms}, Naive: map[string]time.Duration{"old": 1000 * ms}},
		// "late" expired at 5.9s and goes at this sweep: 50ms late.
		{At: 5950 * ms, Store: map[string]time.Duration{"old": 50 * ms}, Naive: map[string]time.Duration{"old": 50 * ms}},
		{At: 6 * time.Second, Store: map[string]time.Duration{}, Naive: map[string]time.Duration{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TTLs after each sweep: -want +got:\n%s", diff)
	}
}

// TestMemoryStore: the embedded store decides, expires a bucket's key once it is full (and
// not before), keeps other processes out with a password, and stops on Close.
func TestMemoryStore(t *testing.T) {
	const interval = 50 * time.Millisecond
	s, err := Open(context.Background(), &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory}, "", Options{MemorySweepInterval: interval})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	rs := s.(*redisStore)
	ctx := context.Background()
	l, err := ratelimit.New(s, "tools", "memory", &v1alpha1.RateLimitConfig{PerUser: bucket(1, 200*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	allow := func() string {
		d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: "alice"})
		switch {
		case err != nil:
			return errLabel(err)
		case d.Allowed:
			return "allowed"
		default:
			return "rejected"
		}
	}

	type result struct {
		First, Second, AfterExpiry string
		KeysAfterFirst             int
		ExpiredNotEarly            bool // the key lived at least its TTL (time to full + 1ms)
		ExpiredWithinInterval      bool // and went within a sweep interval (and some slack) of it
		WithoutPassword            string
		PingAfterClose             string
		SweeperStopped             bool
	}
	var got result
	start := time.Now()
	got.First = allow()
	got.KeysAfterFirst = len(rs.mem.srv.Keys())
	got.Second = allow()
	for len(rs.mem.srv.Keys()) > 0 && time.Since(start) < 2*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	lived := time.Since(start)
	got.ExpiredNotEarly = lived >= 201*time.Millisecond
	got.ExpiredWithinInterval = lived < 201*time.Millisecond+interval+200*time.Millisecond
	t.Logf("the bucket's key (TTL 201ms) went after %s (sweep every %s)", lived.Round(time.Millisecond), interval)
	got.AfterExpiry = allow()

	intruder := redis.NewClient(&redis.Options{Addr: rs.mem.srv.Addr(), MaxRetries: -1})
	got.WithoutPassword = errLabel(intruder.Set(ctx, "tollgate:rl:{tools:memory}:user:x", "0", 0).Err())
	_ = intruder.Close()

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
		ExpiredNotEarly: true, ExpiredWithinInterval: true,
		WithoutPassword: "redis NOAUTH",
		PingAfterClose:  "error",
		SweeperStopped:  true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("memory store: -want +got:\n%s", diff)
	}
}
