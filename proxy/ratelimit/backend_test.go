package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// backend is a Redis the limiter tests run against, with a clock the test can move.
type backend struct {
	name string
	// slack is how far the backend's clock may move by itself during a case: 0 for
	// miniredis (virtual time), a bound on the wall time of a case for a real redis-server.
	slack time.Duration
	// open returns a fresh, empty Redis for one case. expire=false keeps every key forever
	// (as if expiry never ran); the limiter's decisions must not depend on it.
	open func(t *testing.T, expire bool) *store
}

// store is an open backend: a client and a way to let virtual time pass.
type store struct {
	client  redis.UniversalClient
	advance func(d time.Duration)
}

// backends returns miniredis and a real redis-server started for this test (under CI=true a
// missing redis-server fails the test).
func backends(t *testing.T) []backend {
	t.Helper()
	real := testredis.Start(t)
	return []backend{
		{name: "miniredis", open: openMiniredis},
		{name: "redis-server", slack: 2 * time.Second, open: func(t *testing.T, expire bool) *store {
			return openReal(t, real, expire)
		}},
	}
}

// miniredisEpoch is the virtual time every miniredis case starts at.
var miniredisEpoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// openMiniredis moves TIME and key expiry together: ClockTTL(true) + SetTime. Without expiry
// only TIME moves.
func openMiniredis(t *testing.T, expire bool) *store {
	mr := miniredis.RunT(t)
	now := miniredisEpoch
	mr.SetTime(now)
	mr.ClockTTL(expire)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return &store{client: c, advance: func(d time.Duration) {
		now = now.Add(d)
		mr.SetTime(now)
	}}
}

// openReal empties a real redis-server. Its TIME cannot be set, so advancing the clock by d
// shifts every bucket's state d into the past instead: the stored time moves back by d and
// the TTL shrinks by d (the key is deleted when that reaches zero, or kept forever without
// expiry). To the limiter that is exactly d of elapsed time.
func openReal(t *testing.T, srv *testredis.Server, expire bool) *store {
	c := srv.Client(t)
	ctx := context.Background()
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
	return &store{client: c, advance: func(d time.Duration) {
		keys, err := c.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatalf("KEYS: %v", err)
		}
		for _, k := range keys {
			v, err := c.Get(ctx, k).Result()
			if errors.Is(err, redis.Nil) {
				continue // expired since KEYS, on the real clock: a full bucket, which time does not change
			}
			if err != nil {
				t.Fatalf("GET %q: %v", k, err)
			}
			level, at, period, ok := decodeStored(v)
			if !ok {
				t.Fatalf("bucket %q holds %q: not a value the script writes", k, v)
			}
			if err := c.SetArgs(ctx, k, encodeStored(level, at-d.Microseconds(), period), redis.SetArgs{KeepTTL: true, Mode: "XX"}).Err(); err != nil && !errors.Is(err, redis.Nil) { // XX: not if it expired meanwhile
				t.Fatalf("shifting %q: %v", k, err)
			}
			if !expire {
				c.Persist(ctx, k)
				continue
			}
			ttl, err := c.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatalf("PTTL %q: %v", k, err)
			}
			if ttl <= d {
				c.Del(ctx, k)
			} else {
				c.PExpire(ctx, k, ttl-d)
			}
		}
	}}
}
