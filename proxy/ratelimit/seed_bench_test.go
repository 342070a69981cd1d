package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// seedScript is the baseline: a limiter in the style of the seed project (toolhive PR 4692) —
// per bucket a hash read with HMGET, a refill at a fractional rate per second (sent as a
// "%.6f" string), every bucket checked, then HSET and PEXPIRE per bucket.
const seedScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local tokens = {}
for i = 1, n do
  local capacity = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'last')
  local level = tonumber(v[1]) or capacity
  local last = tonumber(v[2]) or now
  level = math.min(capacity, level + (now - last) * rate)
  if level < 1 then return {0} end
  tokens[i] = level
end
for i = 1, n do
  redis.call('HSET', KEYS[i], 'tokens', tokens[i] - 1, 'last', now)
  redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
end
return {1}
`

// seedLimiter decides as the seed did: raw user ids in keys, rates formatted per call.
type seedLimiter struct {
	c      redis.Scripter
	script *redis.Script
}

func (s seedLimiter) allow(ctx context.Context, tool, user string) error {
	const capacity, period = 1_000_000, time.Second
	rate := fmt.Sprintf("%.6f", float64(capacity)/period.Seconds())
	keys := []string{
		"thv:rl:{tools:demo}:shared",
		"thv:rl:{tools:demo}:user:" + user,
		"thv:rl:{tools:demo}:shared:tool:" + tool,
		"thv:rl:{tools:demo}:user-tool:" + tool + ":" + user,
	}
	args := make([]interface{}, 0, 12)
	for range keys {
		args = append(args, capacity, rate, period.Milliseconds())
	}
	return s.script.Run(ctx, s.c, keys, args...).Err()
}

// BenchmarkVsSeed measures the 4-bucket decision against the seed-style script, in one run on
// one redis-server: throughput with 64 concurrent clients, and one client's p50. The ratios
// are what docs/benchmarks.md records.
//
//	go test ./proxy/ratelimit -run '^$' -bench VsSeed -benchtime 5s -count 3
func BenchmarkVsSeed(b *testing.B) {
	srv := testredis.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, PoolSize: 128})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	generous := bucketOf(1_000_000, time.Second)
	four, err := New(c, "tools", "demo", &v1alpha1.RateLimitConfig{
		Shared: generous, PerUser: generous,
		Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: generous, PerUser: generous}},
	})
	if err != nil {
		b.Fatal(err)
	}
	seed := seedLimiter{c: c, script: redis.NewScript(seedScript)}
	users := make([]string, 64)
	for i := range users {
		users[i] = "user-" + strconv.Itoa(i)
	}
	impls := []struct {
		name  string
		allow func(i int) error
	}{
		{"seed-style", func(i int) error { return seed.allow(ctx, "search", users[i%len(users)]) }},
		{"tollgate", func(i int) error {
			_, err := four.Allow(ctx, tool("search", users[i%len(users)]))
			return err
		}},
	}
	for _, im := range impls {
		if err := im.allow(0); err != nil { // connect, load the script
			b.Fatal(err)
		}
		b.Run(im.name+"/64-clients", func(b *testing.B) {
			cpu, own := redisCPU(b, c), processCPU(b)
			defer func() {
				b.ReportMetric(float64(redisCPU(b, c)-cpu)/float64(b.N), "redis-cpu-ns/op")
				b.ReportMetric(float64(processCPU(b)-own)/float64(b.N), "client-cpu-ns/op")
			}()
			b.SetParallelism(32) // 2 cores × 32: 64 goroutines
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := im.allow(int(next.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(im.name+"/1-client", func(b *testing.B) {
			lat := make([]time.Duration, 0, 1<<16)
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				if err := im.allow(i); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		})
	}
}

// redisCPU is the CPU time redis-server has used (INFO cpu, user + system): under 64 clients
// Redis is the limit, so its CPU per decision is the steadier measure of a script's cost.
func redisCPU(b *testing.B, c *redis.Client) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", k, err)
			}
			total += time.Duration(f * float64(time.Second))
		}
	}
	return total
}

// processCPU is the CPU time this process (the clients, go-redis, the limiter's Go side) has
// used, user + system: on 2 cores it competes with Redis for the same CPU.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
