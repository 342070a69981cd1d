package engine

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// capture records the limiter's script calls: the baseline replays exactly them.
type capture struct {
	redis.Scripter
	source string
	calls  []scriptCall
	now    func() time.Time
}

type scriptCall struct {
	at   time.Time
	keys []string
	args []interface{}
}

func (c *capture) EvalSha(ctx context.Context, sha string, keys []string, args ...interface{}) *redis.Cmd {
	cmd := c.Scripter.EvalSha(ctx, sha, keys, args...)
	if cmd.Err() == nil {
		c.calls = append(c.calls, scriptCall{c.now(), keys, args})
	}
	return cmd
}

func (c *capture) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	c.source = script
	c.calls = append(c.calls, scriptCall{c.now(), keys, args})
	return c.Scripter.Eval(ctx, script, keys, args...)
}

// BenchmarkEngine measures the engine's decisions per second in the same run, on the same
// events and the same miniredis, three ways: as it runs (the script in the in-process Lua
// host), with the script run by miniredis's own EVAL (a fresh Lua state per call, over a
// connection: the engine as it was before the host), and bare calls of that EVAL with the
// same keys and arguments at the same virtual times (no engine at all). Ratios, because
// these machines are noisy: "speedup" is the engine against its former self, "eval/bare"
// what the engine's own work (the limiter's Go side, the clock, expiry, peeks) added to
// miniredis's EVAL.
//
//	go test ./simulator/engine -run '^$' -bench '^BenchmarkEngine$' -benchtime 5x -count 3
func BenchmarkEngine(b *testing.B) {
	cfg := &v1alpha1.RateLimitConfig{
		Shared: bucket(50, time.Second), PerUser: bucket(5, time.Second),
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: bucket(20, time.Second), PerUser: bucket(2, time.Second)}},
	}
	var events []traffic.Event
	for i := range 1000 {
		tool := "search"
		if i%3 == 0 {
			tool = "fetch"
		}
		events = append(events, ev(time.Duration(i)*7*time.Millisecond, fmt.Sprintf("user-%d", i%20), tool, 1))
	}
	mr := miniredis.RunT(b)
	opts := Options{Namespace: "default", Name: "bench", Config: cfg, Observe: true, Redis: mr}
	eval := opts
	eval.MiniredisEval = true

	// The calls to replay bare.
	capt := &capture{now: func() time.Time { return time.Time{} }}
	eval.NewLimiter = func(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (Decider, error) {
		capt.Scripter = client
		capt.now = func() time.Time { return traffic.DefaultEpoch.Add(events[len(capt.calls)].At) }
		return RealLimiter(capt, ns, name, cfg, opts...)
	}
	if _, err := Run(b.Context(), eval, events); err != nil {
		b.Fatal(err)
	}
	eval.NewLimiter = nil
	script := redis.NewScript(capt.source)
	// The engine's client settings, so that only the engine differs.
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, PoolSize: 1, ReadTimeout: -1, WriteTimeout: -1})
	defer func() { _ = client.Close() }()

	var engineTime, evalTime, bareTime time.Duration
	var decisions, evalDecisions, calls int
	for b.Loop() {
		d, n := timeRun(b, opts, events)
		engineTime, decisions = engineTime+d, decisions+n
		d, n = timeRun(b, eval, events)
		evalTime, evalDecisions = evalTime+d, evalDecisions+n

		mr.FlushAll()
		runtime.GC() // each side starts without the other's garbage to collect
		start := time.Now()
		for _, c := range capt.calls {
			mr.SetTime(c.at)
			if err := script.Run(b.Context(), client, c.keys, c.args...).Err(); err != nil {
				b.Fatal(err)
			}
		}
		bareTime += time.Since(start)
		calls += len(capt.calls)
	}
	engineRate := float64(decisions) / engineTime.Seconds()
	evalRate := float64(evalDecisions) / evalTime.Seconds()
	bareRate := float64(calls) / bareTime.Seconds()
	b.ReportMetric(engineRate, "decisions/s")
	b.ReportMetric(evalRate, "eval-decisions/s")
	b.ReportMetric(bareRate, "bare-calls/s")
	b.ReportMetric(engineRate/evalRate, "speedup")
	b.ReportMetric(evalRate/bareRate, "eval/bare")
	b.ReportMetric(0, "ns/op") // one op is a whole replay: meaningless beside the rates
}

// timeRun times one replay of events, after a collection so that it starts without the
// previous replay's garbage.
func timeRun(b *testing.B, opts Options, events []traffic.Event) (time.Duration, int) {
	b.Helper()
	runtime.GC()
	start := time.Now()
	res, err := Stream(b.Context(), opts, slices.Values(events), nil)
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start), res.Events
}

// BenchmarkModelEngine measures --engine model: a million decisions (10 000 users, a shared,
// a per-user and a per-tool bucket) decided by the reference model, in decisions per second.
//
//	go test ./simulator/engine -run '^$' -bench ModelEngine -benchtime 3x
func BenchmarkModelEngine(b *testing.B) {
	cfg := &v1alpha1.RateLimitConfig{
		Shared: bucket(5000, time.Second), PerUser: bucket(5, time.Second),
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: bucket(3000, time.Second), PerUser: bucket(2, time.Second)}},
	}
	events := make([]traffic.Event, 1_000_000)
	for i := range events {
		tool := "search"
		if i%3 == 0 {
			tool = "fetch"
		}
		events[i] = ev(time.Duration(i)*100*time.Microsecond, fmt.Sprintf("user-%d", i%10_000), tool, 1)
	}
	opts := Options{Namespace: "default", Name: "bench", Config: cfg, Model: true}
	var elapsed time.Duration
	decisions := 0
	for b.Loop() {
		runtime.GC()
		start := time.Now()
		res, err := Run(b.Context(), opts, events)
		if err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		decisions += len(res.Outcomes)
	}
	b.ReportMetric(float64(decisions)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(0, "ns/op")
}
