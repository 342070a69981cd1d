package store

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
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// batchCounter counts the script calls the client sends and the batches (pipelines) that
// carry them.
type batchCounter struct{ calls, batches atomic.Int64 }

func (c *batchCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *batchCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.HasPrefix(cmd.Name(), "eval") {
			c.calls.Add(1)
			c.batches.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *batchCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, cmd := range cmds {
			if strings.HasPrefix(cmd.Name(), "eval") {
				n++
			}
		}
		if n > 0 {
			c.calls.Add(int64(n))
			c.batches.Add(1)
		}
		return next(ctx, cmds)
	}
}

// TestPipelinedDecisions: concurrent decisions through the pipelined store share round
// trips, and each is still exactly one EVALSHA, run once: on a bucket of 1000 tokens that
// does not refill within the test, 64 × 25 calls admit exactly 1000, and Redis counts one
// EVALSHA per call. Without pipelining, the same holds and every call is a round trip.
func TestPipelinedDecisions(t *testing.T) {
	for name, noPipelining := range map[string]bool{"pipelined": false, "one round trip per call": true} {
		t.Run(name, func(t *testing.T) { testPipelinedDecisions(t, noPipelining) })
	}
}

func testPipelinedDecisions(t *testing.T, noPipelining bool) {
	srv := testredis.Start(t)
	s := openT(t, nil, "redis://"+srv.Addr, Options{Timeout: 2 * time.Second, NoPipelining: noPipelining})
	counter := &batchCounter{}
	s.client.AddHook(counter)
	l, err := ratelimit.New(s, "tools", "pipelined", &v1alpha1.RateLimitConfig{
		Shared:  bucket(1000, 24*time.Hour),
		PerUser: bucket(100, 24*time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "x", UserID: "warm-up"}); err != nil {
		t.Fatalf("first decision (loads the script): %v", err)
	}
	if err := s.client.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	counter.calls.Store(0)
	counter.batches.Store(0)

	const workers, each = 64, 25
	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "x", UserID: "user-" + strconv.Itoa(w)})
				switch {
				case err != nil:
					failed.Add(1)
				case d.Allowed:
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	stats, err := s.client.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		Admitted, Failed, Sent, EvalshaInRedis int64
		SharedRoundTrips                       bool
	}
	got := result{
		Admitted: admitted.Load(), Failed: failed.Load(), Sent: counter.calls.Load(),
		EvalshaInRedis:   commandCalls(stats, "evalsha"),
		SharedRoundTrips: counter.batches.Load() < counter.calls.Load(),
	}
	t.Logf("%d calls in %d batches", counter.calls.Load(), counter.batches.Load())
	want := result{Admitted: 999, Sent: workers * each, EvalshaInRedis: workers * each, SharedRoundTrips: !noPipelining} // 999: the warm-up took one
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pipelined decisions: -want +got:\n%s", diff)
	}
}

// commandCalls reads calls=N of cmdstat_<name> from INFO commandstats.
func commandCalls(info, name string) int64 {
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+name+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest+",", ',')], 10, 64)
		return n
	}
	return 0
}
