package ratelimit

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// BenchmarkDecision measures one decision on a real redis-server beside a bare PING on the
// same server and connection pool in the same run: the ratio Allow/PING is what to compare
// across machines (docs/benchmarks.md). Each sub-benchmark reports p50 and p99 latency.
//
//	go test ./proxy/ratelimit -run '^$' -bench Decision -benchtime 20000x -count 5
func BenchmarkDecision(b *testing.B) {
	srv := testredis.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	generous := bucketOf(1_000_000, time.Second) // never rejects: measures the admitted path
	one, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: generous})
	if err != nil {
		b.Fatal(err)
	}
	four, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{
		Shared: generous, PerUser: generous,
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}},
	})
	if err != nil {
		b.Fatal(err)
	}
	users := make([]string, 64)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i)
	}
	run := func(b *testing.B, op func(i int) error) {
		if err := op(0); err != nil { // connect, load the script
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			if err := op(i); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}
	b.Run("PING", func(b *testing.B) {
		run(b, func(int) error { return c.Ping(ctx).Err() })
	})
	b.Run("Allow-1-bucket", func(b *testing.B) {
		run(b, func(i int) error {
			_, err := one.Allow(ctx, tool("search", users[i%len(users)]))
			return err
		})
	})
	b.Run("Allow-4-buckets", func(b *testing.B) {
		run(b, func(i int) error {
			_, err := four.Allow(ctx, tool("search", users[i%len(users)]))
			return err
		})
	})
}

// BenchmarkDecisionRatio interleaves PING, a 1-bucket and a 4-bucket decision in one loop on
// one connection pool, so that all three see the same machine conditions (on these VMs an idle
// machine is slower per round trip than a busy one), and reports each one's p50 and p99 and the
// ratios of the p50s to PING's: the numbers docs/benchmarks.md records.
//
//	go test ./proxy/ratelimit -run '^$' -bench DecisionRatio -benchtime 30000x -count 5
func BenchmarkDecisionRatio(b *testing.B) {
	srv := testredis.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	generous := bucketOf(1_000_000, time.Second)
	one, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{Shared: generous})
	if err != nil {
		b.Fatal(err)
	}
	four, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{
		Shared: generous, PerUser: generous,
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ops := []func(i int) error{
		func(int) error { return c.Ping(ctx).Err() },
		func(i int) error {
			_, err := one.Allow(ctx, tool("search", "user-"+strconv.Itoa(i%64)))
			return err
		},
		func(i int) error {
			_, err := four.Allow(ctx, tool("search", "user-"+strconv.Itoa(i%64)))
			return err
		},
	}
	for _, op := range ops { // connect, load the script
		if err := op(0); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([][]time.Duration, len(ops))
	for i := 0; b.Loop(); i++ {
		k := i % len(ops)
		start := time.Now()
		if err := ops[k](i); err != nil {
			b.Fatal(err)
		}
		lat[k] = append(lat[k], time.Since(start))
	}
	p50 := make([]float64, len(ops))
	for k, l := range lat {
		if len(l) == 0 {
			return
		}
		slices.Sort(l)
		p50[k] = float64(l[len(l)/2].Nanoseconds())
		b.ReportMetric(p50[k], []string{"ping", "allow1", "allow4"}[k]+"-p50-ns")
		b.ReportMetric(float64(l[len(l)*99/100].Nanoseconds()), []string{"ping", "allow1", "allow4"}[k]+"-p99-ns")
	}
	b.ReportMetric(p50[1]/p50[0], "allow1/ping-p50")
	b.ReportMetric(p50[2]/p50[0], "allow4/ping-p50")
}

// BenchmarkCollect measures the limiter's own work per decision, without Redis: bucket
// lookup, user hashing, key building.
func BenchmarkCollect(b *testing.B) {
	generous := bucketOf(1_000_000, time.Second)
	l, err := New(noScripter{}, "tools", "demo", &v1alpha1.RateLimitConfig{
		Shared: generous, PerUser: generous,
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}},
	})
	if err != nil {
		b.Fatal(err)
	}
	reqs := []Request{tool("search", "alice@example.com")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.collect(reqs); err != nil {
			b.Fatal(err)
		}
	}
}
