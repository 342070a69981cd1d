package store

import (
	"context"
	"errors"
	"fmt"
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
// EVALSHA per call. Without pipelining, the same holds and every call is a round trip. The
// same through Sentinel; TestCluster runs it on a Redis Cluster.
func TestPipelinedDecisions(t *testing.T) {
	srv := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, srv.Addr, "mymaster")
	cases := map[string]struct {
		url          string
		noPipelining bool
	}{
		"Pipelined":           {url: "redis://" + srv.Addr},
		"OneRoundTripPerCall": {url: "redis://" + srv.Addr, noPipelining: true},
		"PipelinedSentinel":   {url: "redis+sentinel://" + sentinel.Addr + "/mymaster"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) { testPipelinedDecisions(t, tc.url, tc.noPipelining) })
	}
}

func testPipelinedDecisions(t *testing.T, url string, noPipelining bool) {
	s := openT(t, nil, url, Options{Timeout: 2 * time.Second, NoPipelining: noPipelining})
	counter := &batchCounter{}
	s.client.AddHook(counter)
	l, err := ratelimit.New(s, "tools", "pipelined-"+strings.ToLower(t.Name()[strings.LastIndexByte(t.Name(), '/')+1:]), &v1alpha1.RateLimitConfig{
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
	if err := forEachMaster(ctx, s.client, func(c *redis.Client) error { return c.ConfigResetStat(ctx).Err() }); err != nil {
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
	var evalsha atomic.Int64
	if err := forEachMaster(ctx, s.client, func(c *redis.Client) error {
		stats, err := c.Info(ctx, "commandstats").Result()
		evalsha.Add(commandCalls(stats, "evalsha"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		Admitted, Failed, Sent, EvalshaInRedis int64
		SharedRoundTrips                       bool
	}
	got := result{
		Admitted: admitted.Load(), Failed: failed.Load(), Sent: counter.calls.Load(),
		EvalshaInRedis:   evalsha.Load(),
		SharedRoundTrips: counter.batches.Load() < counter.calls.Load(),
	}
	t.Logf("%d calls in %d batches", counter.calls.Load(), counter.batches.Load())
	want := result{Admitted: 999, Sent: workers * each, EvalshaInRedis: workers * each, SharedRoundTrips: !noPipelining} // 999: the warm-up took one
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pipelined decisions: -want +got:\n%s", diff)
	}
}

// forEachMaster runs f on a standalone client, or on each master of a Cluster.
func forEachMaster(ctx context.Context, c redis.UniversalClient, f func(*redis.Client) error) error {
	switch c := c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, func(_ context.Context, n *redis.Client) error { return f(n) })
	case *redis.Client:
		return f(c)
	default:
		return fmt.Errorf("%T: not a standalone or Cluster client", c)
	}
}

// TestCombinerReplies: under concurrency every caller gets its own command's reply, never
// another's (64 callers, each ECHOing its own values through shared pipelines).
func TestCombinerReplies(t *testing.T) {
	srv := testredis.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, PipelinePoolSize: -1})
	t.Cleanup(func() { _ = client.Close() })
	counter := &batchCounter{}
	client.AddHook(counter)
	p := newCombiner(client)
	const workers, each = 64, 50
	wrong := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				want := strconv.Itoa(w) + "/" + strconv.Itoa(i)
				cmd := redis.NewCmd(context.Background(), "eval", "return ARGV[1]", 0, want)
				p.process(context.Background(), cmd)
				if got, err := cmd.Text(); err != nil || got != want {
					wrong[w]++
				}
			}
		})
	}
	wg.Wait()
	if diff := cmp.Diff(make([]int, workers), wrong); diff != "" {
		t.Errorf("replies that were not the caller's own, by caller: -want +got:\n%s", diff)
	}
	if counter.batches.Load() >= counter.calls.Load() {
		t.Errorf("%d calls in %d round trips: none shared", counter.calls.Load(), counter.batches.Load())
	}
	t.Logf("%d calls in %d round trips", counter.calls.Load(), counter.batches.Load())

	// One caller at a time: each call is a plain command on the caller's goroutine.
	counter.calls.Store(0)
	counter.batches.Store(0)
	for i := range 20 {
		p.process(context.Background(), redis.NewCmd(context.Background(), "eval", "return ARGV[1]", 0, i))
	}
	if got := [2]int64{counter.calls.Load(), counter.batches.Load()}; got != [2]int64{20, 20} {
		t.Errorf("20 sequential calls: (calls, round trips) = %v, want [20 20]", got)
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

// TestCombinerCallerGivesUp: with two round trips hung on a stopped Redis, queued callers
// whose contexts end leave at once with their context's error, long before the hung round
// trips time out, and their calls are never sent; the combiner ends empty.
func TestCombinerCallerGivesUp(t *testing.T) {
	srv := testredis.StartRestartable(t)
	const hang = 2 * time.Second // the read timeout the hung round trips wait out
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, PipelinePoolSize: -1, ReadTimeout: hang})
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()
	if err := client.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p := newCombiner(client)
	script := func() *redis.Cmd { return redis.NewCmd(ctx, "eval", "return 1", 0) }

	srv.Pause()
	var hung sync.WaitGroup
	for range p.maxInFlight {
		hung.Go(func() { p.process(ctx, script()) })
	}
	for deadline := time.Now().Add(5 * time.Second); ; { // until both are out
		p.mu.Lock()
		out := p.inFlight
		p.mu.Unlock()
		if out == p.maxInFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d round trips out after 5s, want %d", out, p.maxInFlight)
		}
		time.Sleep(time.Millisecond)
	}

	const waiters = 50
	errs := make([]error, waiters)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			cmd := script()
			p.process(cctx, cmd)
			errs[i] = cmd.Err()
		})
	}
	wg.Wait()
	waited := time.Since(start)
	srv.Resume()
	hung.Wait()

	type result struct {
		DeadlineErrors int
		LeftBeforeHang bool
		SentToRedis    int64 // the two hung calls only
		InFlight       int
		Queued         int
	}
	var got result
	for _, err := range errs {
		if errors.Is(err, context.DeadlineExceeded) {
			got.DeadlineErrors++
		}
	}
	got.LeftBeforeHang = waited < hang/2
	stats, err := client.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	got.SentToRedis = commandCalls(stats, "eval")
	p.mu.Lock()
	got.InFlight, got.Queued = p.inFlight, len(p.queue)
	p.mu.Unlock()
	t.Logf("%d queued callers left after %s", waiters, waited.Round(time.Millisecond))
	want := result{DeadlineErrors: waiters, LeftBeforeHang: true, SentToRedis: int64(p.maxInFlight)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// TestPipelinedOutage: 32 callers decide in a loop (each with the proxy's 250ms check
// timeout) while Redis hangs for 600ms and comes back. Sharing round trips must not stretch
// an outage: no call takes much longer than the check timeout, the breaker opens and then
// fails calls at once, every caller ends, and decisions succeed again once Redis is back.
func TestPipelinedOutage(t *testing.T) {
	srv := testredis.StartRestartable(t)
	s := openT(t, nil, "redis://"+srv.Addr, Options{
		Timeout: 100 * time.Millisecond,
		Breaker: BreakerOptions{Failures: 5, ProbeEvery: 200 * time.Millisecond},
	})
	l, err := ratelimit.New(s, "tools", "outage", limitsGenerous)
	if err != nil {
		t.Fatal(err)
	}
	allow := func(user string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: user})
		return time.Since(start), err
	}
	if _, err := allow("warm-up"); err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	var mu sync.Mutex
	outcomes := map[string]int{}
	var slowest time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				took, err := allow("user-" + strconv.Itoa(w))
				mu.Lock()
				outcomes[label(err)]++
				slowest = max(slowest, took)
				mu.Unlock()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	srv.Pause()
	time.Sleep(600 * time.Millisecond)
	srv.Resume()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	// Once Redis is back and the breaker's pause is over, decisions succeed.
	var after string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := allow("after"); err == nil {
			after = "allowed"
			break
		} else {
			after = label(err)
		}
	}
	t.Logf("outcomes %v; slowest call %s", outcomes, slowest.Round(time.Millisecond))
	type result struct {
		SawAllowed, SawCircuitOpen bool
		SlowestUnderOneSecond      bool
		After                      string
	}
	got := result{
		SawAllowed: outcomes["allowed"] > 0, SawCircuitOpen: outcomes["circuit open"] > 0,
		SlowestUnderOneSecond: slowest < time.Second, After: after,
	}
	want := result{SawAllowed: true, SawCircuitOpen: true, SlowestUnderOneSecond: true, After: "allowed"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// limitsGenerous never refuses within a test.
var limitsGenerous = &v1alpha1.RateLimitConfig{
	Shared:  bucket(1_000_000, time.Second),
	PerUser: bucket(1_000_000, time.Second),
	Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: bucket(1_000_000, time.Second), PerUser: bucket(1_000_000, time.Second)}},
}
