package ratelimit

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// TestNoOverAdmissionUnderConcurrency: three limiters (three proxy replicas) with eight
// goroutines each hammer one bucket on a real redis-server for about two seconds. The
// admitted count must stay within the token-bucket envelope, maxTokens + rate × elapsed (+1
// for the token being refilled at the edges), measured on Redis's own clock.
func TestNoOverAdmissionUnderConcurrency(t *testing.T) {
	srv := testredis.Start(t)
	const (
		maxTokens = 50
		period    = time.Second // 50 tokens per second
		replicas  = 3
		workers   = 8
		runFor    = 2 * time.Second
	)
	cfg := &v1alpha1.RateLimitConfig{Shared: bucketOf(maxTokens, period), PerUser: bucketOf(maxTokens, period)}
	limiters := make([]*Limiter, replicas)
	for i := range limiters {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, PoolSize: workers})
		defer func() { _ = c.Close() }()
		l, err := New(c, "tools", "demo", cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		limiters[i] = l
	}
	probe := srv.Client(t)
	ctx := context.Background()
	start, err := probe.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	var admitted, rejected, calls atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(runFor)
	for _, l := range limiters {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					d, err := l.Allow(ctx, tool("search", "user-"+strconv.Itoa(w%2)))
					if err != nil {
						t.Errorf("Allow: %v", err)
						return
					}
					calls.Add(1)
					if d.Allowed {
						admitted.Add(1)
					} else {
						rejected.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	end, err := probe.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	elapsed := end.Sub(start)
	envelope := maxTokens + int64(float64(maxTokens)*elapsed.Seconds()/period.Seconds()) + 1
	t.Logf("%d calls in %s: %d admitted (envelope %d), %d rejected", calls.Load(), elapsed, admitted.Load(), envelope, rejected.Load())
	if admitted.Load() > envelope {
		t.Errorf("admitted %d > envelope %d over %s", admitted.Load(), envelope, elapsed)
	}
	// The load must exceed the limit, and the bucket must have admitted at least its burst:
	// otherwise the envelope was never tested.
	if rejected.Load() == 0 || admitted.Load() < maxTokens {
		t.Errorf("admitted %d, rejected %d: the load did not press the bucket", admitted.Load(), rejected.Load())
	}
}

// TestOneRoundTripPerDecision counts commands on a real redis-server: after the script is
// loaded, each decision is exactly one EVALSHA, whatever the number of buckets.
func TestOneRoundTripPerDecision(t *testing.T) {
	srv := testredis.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	l, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{
		Shared: bucketOf(1000, time.Minute), PerUser: bucketOf(1000, time.Minute),
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: bucketOf(1000, time.Minute), PerUser: bucketOf(1000, time.Minute)}},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := l.Allow(ctx, tool("search", "alice")); err != nil { // loads the script
		t.Fatalf("Allow: %v", err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatalf("CONFIG RESETSTAT: %v", err)
	}
	counter := &countingHook{}
	c.AddHook(counter)
	const n = 50
	for i := range n {
		if _, err := l.Allow(ctx, tool("search", "user-"+strconv.Itoa(i))); err != nil {
			t.Fatalf("Allow: %v", err)
		}
	}
	sent := counter.n.Load()
	stats, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	got := map[string]int{}
	for _, line := range strings.Split(stats, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		got[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(calls)
		if name == "cmdstat_evalsha" {
			_, usec, _ := strings.Cut(rest, "usec_per_call=")
			usec, _, _ = strings.Cut(usec, ",")
			t.Logf("Redis CPU per 4-bucket decision (commandstats usec_per_call): %s µs", usec)
		}
	}
	// commandstats also counts what the script runs inside Redis, CONFIG RESETSTAT and INFO.
	for _, inside := range []string{"time", "mget", "set", "config|resetstat", "info"} {
		delete(got, inside)
	}
	if diff := cmp.Diff(map[string]int{"evalsha": n}, got); diff != "" {
		t.Errorf("commands clients sent for %d decisions: -want +got:\n%s", n, diff)
	}
	if sent != n {
		t.Errorf("round trips the limiter made for %d decisions: want %d, got %d", n, n, sent)
	}
}

// countingHook counts the commands a go-redis client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}
