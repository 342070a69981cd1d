package check

import (
	"fmt"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
)

// CheckRedisKeys judges redisKeys: the keys the limiter kept in Redis stayed within bounds.
// Keys expire when their bucket is full again, so an idle user costs no memory; the peak is
// about the users active within one refill period.
func CheckRedisKeys(k scenario.RedisKeys, ks engine.KeyStats) Result {
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
	if r.OK {
		r.Summary = summary + ": within bounds"
	} else {
		r.Summary = summary + ": out of bounds"
	}
	return r
}
