package check

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// denyCacheExact judges the deny cache's promise (docs/limiter.md): the decisions with the
// cache are the decisions without it. The main replay runs with the cache, as the proxy does;
// Finish replays the same calls through the same limiter without it (same replicas, same
// outages) and compares them call by call. A call Redis decided in both is the same decision
// to the last field (outcome, RetryAfter, every bucket's cost, remaining tokens, time to full
// and wait): a refusal the cache made writes nothing, so Redis holds the same buckets in both
// replays. A call the cache refused is refused without it too, and the wait the cache gave,
// from an upper bound of each level, is not longer. Calls made while Redis was down are not
// compared: the cache still refuses what it knows then, which no Redis can confirm, and the
// local buckets of the two replays then differ by those calls.
type denyCacheExact struct {
	r        Result
	replayer NewReplayer
	outages  []engine.Outage
	tr       *traffic.Traffic
	// with are the main replay's decisions, one a call: 24 bytes each.
	with []cachedDecision
	// compared and cached count the calls compared, and those the cache refused.
	compared, cached, skipped int
}

// cachedDecision is what denyCacheExact keeps of one decision with the cache.
type cachedDecision struct {
	digest  uint64
	retry   time.Duration
	outcome ratelimit.Outcome
	cached  bool
}

func newDenyCacheExact(tr *traffic.Traffic, outages []engine.Outage, replayer NewReplayer) *denyCacheExact {
	return &denyCacheExact{r: Result{Name: DenyCacheExact, OK: true}, replayer: replayer, outages: outages, tr: tr}
}

func (c *denyCacheExact) Observe(_ traffic.Event, o engine.Outcome) {
	c.with = append(c.with, cachedDecision{digest: fullDigest(o), retry: o.RetryAfter, outcome: o.Outcome, cached: o.Cached})
}

func (c *denyCacheExact) Finish(ctx context.Context, _ *engine.Result) (Result, error) {
	rp, err := c.replayer(nil, ReplayOptions{NoDenyCache: true})
	if err != nil {
		return c.r, fmt.Errorf("replay without the deny cache: %w", err)
	}
	defer rp.Close()
	next := 0
	_, err = rp.Replay(ctx, c.tr.All(), func(i int, ev traffic.Event, o engine.Outcome) {
		if i >= len(c.with) {
			c.r.violate("%s %s %s: a call the replay with the cache did not have", at(ev.At), who(ev.User), callName(ev))
			return
		}
		if engine.InOutage(c.outages, &next, ev.At) {
			c.skipped++
			return
		}
		c.compared++
		w := c.with[i]
		switch {
		case w.cached:
			c.cached++
			if o.Outcome != w.outcome || w.retry > o.RetryAfter {
				c.r.violate("%s %s %s: the deny cache refused it (retry after %s); without the cache: %s", at(ev.At), who(ev.User), callName(ev), w.retry, describe(o))
			}
		case w.digest != fullDigest(o):
			how := "the same outcome with other buckets or waits"
			if w.outcome != o.Outcome {
				how = string(w.outcome)
			}
			c.r.violate("%s %s %s: with the deny cache: %s; without it: %s", at(ev.At), who(ev.User), callName(ev), how, describe(o))
		}
	})
	if err != nil {
		return c.r, fmt.Errorf("replay without the deny cache: %w", err)
	}
	r := c.r
	switch {
	case !r.OK:
		r.Summary = fmt.Sprintf("%s differ with the deny cache and without it (of %d compared)", plural(r.Count, "decision"), c.compared)
	case c.cached == 0:
		r = vacuous(DenyCacheExact, fmt.Sprintf("the deny cache refused no call, so the %s compared were all Redis's", plural(c.compared, "decision")))
	default:
		r.Summary = fmt.Sprintf("the same decision with the deny cache and without it for all %s (%d refused by the cache)", plural(c.compared, "call"), c.cached)
	}
	if c.skipped > 0 {
		r.Summary += fmt.Sprintf("; %s while Redis was down not compared", plural(c.skipped, "call"))
	}
	return r, nil
}

// fullDigest sums up a whole decision: what became of the call, its RetryAfter, the bucket
// that refused it and every bucket's part (FNV-1a, as digest).
func fullDigest(o engine.Outcome) uint64 {
	h := fnv{sum: 14695981039346656037}
	h.str(string(o.Outcome))
	h.int(int64(o.RetryAfter))
	if o.Rejected != nil {
		h.str(o.Rejected.String())
	}
	h.int(int64(len(o.Buckets)))
	for _, b := range o.Buckets {
		h.str(b.String())
		h.int(b.Cost)
		h.int(b.Remaining)
		h.int(int64(b.Reset))
		h.int(int64(b.Wait))
		h.int(int64(b.NextToken))
	}
	return h.sum
}
