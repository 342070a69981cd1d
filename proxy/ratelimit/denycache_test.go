package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// denyConfig has small buckets that random traffic empties often: shared, per user, per tool.
func denyConfig() *v1alpha1.RateLimitConfig {
	return &v1alpha1.RateLimitConfig{
		Shared:  bucketOf(20, 2*time.Second),
		PerUser: bucketOf(4, time.Second),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: bucketOf(2, 500*time.Millisecond)}, {Name: "b", Shared: bucketOf(3, time.Second)}},
	}
}

// randomCall is a call of one of five users to tool a or b, sometimes a batch of two.
func randomCall(rng *rand.Rand) []Request {
	user := fmt.Sprintf("u%d", rng.IntN(5))
	call := func() Request {
		return Request{Method: MethodToolsCall, Name: []string{"a", "b"}[rng.IntN(2)], UserID: user, Cost: int32(1 + rng.IntN(2))}
	}
	if rng.IntN(5) == 0 {
		return []Request{call(), call()}
	}
	return []Request{call()}
}

// TestDenyCacheExact: three replicas with deny caches share one Redis under random traffic.
// Every local refusal is one Redis would have made: the test asks Redis the same question
// through a limiter without a cache (a rejected script writes nothing; had Redis admitted, the
// test fails anyway). On miniredis with virtual time the runs are repeatable and a cache that
// refuses one token early is caught; on a real redis-server the clocks are real.
func TestDenyCacheExact(t *testing.T) {
	for _, backend := range []string{"miniredis", "redis-server"} {
		t.Run(backend, func(t *testing.T) {
			local, violations := runDenyCache(t, backend, 0)
			if local == 0 {
				t.Fatal("no decision was refused locally: the test proves nothing")
			}
			if violations != 0 {
				t.Errorf("%d of %d local refusals were calls Redis admitted", violations, local)
			}
			t.Logf("%s: %d local refusals, all of them Redis's too", backend, local)
		})
	}
	t.Run("MutantRefusesEarly", func(t *testing.T) {
		// A cache whose bounds are one token too low must be caught.
		if _, violations := runDenyCache(t, "miniredis", int64(time.Second/time.Microsecond)); violations == 0 {
			t.Error("a cache that refuses one token early passed the check")
		}
	})
}

// runDenyCache replays random traffic through three cached replicas and returns how many
// decisions were refused locally and how many of those Redis would have admitted.
func runDenyCache(t *testing.T, backend string, early int64) (local, violations int) {
	t.Helper()
	var client *redis.Client
	clock := struct {
		sync.Mutex
		now time.Time
	}{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	now := time.Now
	var mr *miniredis.Miniredis
	switch backend {
	case "miniredis":
		mr = miniredis.RunT(t)
		mr.SetTime(clock.now)
		client = redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
		now = func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	default:
		srv := testredis.Start(t)
		client = redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	}
	defer func() { _ = client.Close() }()
	ctx := context.Background()
	var replicas []*Limiter
	for range 3 {
		l, err := New(client, "ns", "deny-"+backend, denyConfig(), WithDenyCache(1000), WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		l.deny.early = early
		replicas = append(replicas, l)
	}
	truth, err := New(client, "ns", "deny-"+backend, denyConfig())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 1500 {
		step := time.Duration(rng.IntN(40_000)) * time.Microsecond
		if mr != nil {
			clock.Lock()
			clock.now = clock.now.Add(step)
			mr.SetTime(clock.now)
			clock.Unlock()
		} else if i%8 == 0 {
			time.Sleep(step)
		}
		reqs := randomCall(rng)
		d, err := replicas[i%3].AllowAll(ctx, reqs)
		if errors.Is(err, ErrInvalidRequest) {
			continue // a batch above a bucket's capacity: refused before any bucket is asked
		}
		if err != nil {
			t.Fatal(err)
		}
		if !d.Local {
			continue
		}
		local++
		if d.Allowed || d.RetryAfter <= 0 || d.Rejected == nil {
			t.Fatalf("a local refusal must be a rejection with a wait: %+v", d)
		}
		again, err := truth.AllowAll(ctx, reqs)
		if err != nil {
			t.Fatal(err)
		}
		// On a real clock time passes between the two questions: Redis admitting is a
		// violation only before the wait the cache gave was over (on miniredis no time passes).
		if again.Allowed && again.Time.Before(d.Time.Add(d.RetryAfter)) {
			violations++
		}
	}
	return local, violations
}

// TestDenyCacheSameDecisions: the same traffic on two Redis servers with the same virtual
// time, one through cached replicas and one through uncached ones: every decision is the same.
func TestDenyCacheSameDecisions(t *testing.T) {
	type run struct {
		mr       *miniredis.Miniredis
		replicas []*Limiter
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	var runs [2]run
	for i, cache := range []int{1000, 0} {
		runs[i].mr = miniredis.RunT(t)
		runs[i].mr.SetTime(now)
		c := redis.NewClient(&redis.Options{Addr: runs[i].mr.Addr(), MaxRetries: -1})
		defer func() { _ = c.Close() }()
		for range 3 {
			l, err := New(c, "ns", "same", denyConfig(), WithDenyCache(cache), WithClock(func() time.Time { return now }))
			if err != nil {
				t.Fatal(err)
			}
			runs[i].replicas = append(runs[i].replicas, l)
		}
	}
	rng := rand.New(rand.NewPCG(3, 5))
	admitted, local := 0, 0
	for i := range 2000 {
		now = now.Add(time.Duration(rng.IntN(40_000)) * time.Microsecond)
		reqs := randomCall(rng)
		var allowed [2]bool
		for k := range runs {
			runs[k].mr.SetTime(now)
			d, err := runs[k].replicas[i%3].AllowAll(context.Background(), reqs)
			if errors.Is(err, ErrInvalidRequest) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			allowed[k] = d.Allowed
			if k == 0 && d.Local {
				local++
			}
		}
		if allowed[0] != allowed[1] {
			t.Fatalf("decision %d: with the cache allowed=%v, without it allowed=%v", i, allowed[0], allowed[1])
		}
		if allowed[0] {
			admitted++
		}
	}
	if local == 0 || admitted == 0 {
		t.Errorf("%d admitted, %d refused locally: the comparison proves nothing", admitted, local)
	}
	t.Logf("2000 decisions: %d admitted with and without the cache; %d refused locally", admitted, local)
}

// TestDenyCacheBounded: a flood of distinct hostile users keeps at most the configured
// entries.
func TestDenyCacheBounded(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = c.Close() }()
	l, err := New(c, "ns", "bounded", &v1alpha1.RateLimitConfig{PerUser: bucketOf(1, time.Hour)}, WithDenyCache(100))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		req := Request{Method: MethodToolsCall, Name: "t", UserID: fmt.Sprint("hostile-", i)}
		for range 2 {
			if _, err := l.AllowAll(context.Background(), []Request{req}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := l.deny.Len(); n != 100 {
		t.Errorf("%d entries after 500 users, want the bound, 100", n)
	}
}
