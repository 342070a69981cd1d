package check

import (
	"context"
	"fmt"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckRedisKeys judges redisKeys: the keys the limiter kept in Redis stayed within bounds.
// Keys expire when their bucket is full again, so an idle user costs no memory; the peak is
// about the users active within one refill period.
func CheckRedisKeys(k scenario.RedisKeys, ks engine.KeyStats, scriptCalls int) Result {
	r, _ := redisKeys(k).Finish(context.Background(), &engine.Result{Keys: ks, ScriptCalls: scriptCalls})
	return r
}

// redisKeys is judged from the replay's key statistics at the end.
type redisKeys scenario.RedisKeys

func (redisKeys) Observe(traffic.Event, engine.Outcome) {}

func (c redisKeys) Finish(_ context.Context, res *engine.Result) (Result, error) {
	k, ks, scriptCalls := scenario.RedisKeys(c), res.Keys, res.ScriptCalls
	r := Result{Name: RedisKeys, OK: true}
	for _, b := range []struct {
		name   string
		bounds *scenario.Bounds
		n      int
	}{{"peak", k.Peak, ks.Peak}, {"final", k.Final, ks.Final}, {"expired", k.Expired, ks.Expired}} {
		if !b.bounds.Holds(int64(b.n)) {
			r.violate("%s keys %d, want %s", b.name, b.n, b.bounds)
		}
	}
	summary := fmt.Sprintf("peak %d keys, %d at the end, %d expired", ks.Peak, ks.Final, ks.Expired)
	switch {
	case r.OK && scriptCalls == 0:
		r = vacuous(RedisKeys, "the limiter never called Redis, so no key was written")
	case r.OK:
		r.Summary = summary + ": within bounds"
	default:
		r.Summary = summary + ": out of bounds"
	}
	return r, nil
}
