package check

import (
	"context"
	"fmt"
	"strings"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// CheckIsolation judges isolation by replaying: each checked user's calls alone must get
// the same outcomes (admitted or not, RetryAfter, the remaining tokens of the user's own
// buckets) as among everybody's calls. With scope perUser (the default) both replays keep
// only the per-user buckets, because shared buckets couple users by design; this catches a
// key scheme in which two users (or a user and a tool) share a bucket. With scope all the
// full config is kept and the everybody run is the scenario's own: "nobody else's traffic
// ever changed this user's outcome", true only when shared buckets are big enough.
//
// Both replays are the isolation's own, with one replica and no deny cache: isolation judges
// the buckets and their keys, and a deny cache that learned from other users' rejections of a
// shared bucket answers with the buckets it knows (denyCacheExact judges the cache).
//
// outs are the scenario's own outcomes, one per event of tr.
func CheckIsolation(ctx context.Context, iso scenario.Isolation, cfg *v1alpha1.RateLimitConfig, tr *traffic.Traffic, outs []engine.Outcome, replayer NewReplayer) (Result, error) {
	c := newIsolation(iso, cfg, tr, replayer)
	i := 0
	for ev := range tr.All() {
		c.Observe(ev, outs[i])
		i++
	}
	return c.Finish(ctx, &engine.Result{Events: i})
}

type isolation struct {
	r           Result
	iso         scenario.Isolation
	cfg         *v1alpha1.RateLimitConfig // the everybody run's config
	tr          *traffic.Traffic
	newReplayer NewReplayer
	// users are the checked users, as listed or in order of first call; listed is nil when
	// every identified user is checked.
	users  []string
	listed map[string]bool
	// together holds a digest of each checked call's outcome among everybody, per user in
	// call order: 8 bytes a call, however big the run.
	together map[string][]uint64
	compared int
}

func newIsolation(iso scenario.Isolation, cfg *v1alpha1.RateLimitConfig, tr *traffic.Traffic, replayer NewReplayer) *isolation {
	c := &isolation{r: Result{Name: Isolation, OK: true}, iso: iso, cfg: cfg, tr: tr, newReplayer: replayer, together: map[string][]uint64{}}
	if iso.Scope != scenario.ScopeAll {
		c.cfg = scenario.PerUserOnly(cfg)
	}
	if len(iso.Users) > 0 {
		c.users, c.listed = iso.Users, map[string]bool{}
		for _, u := range iso.Users {
			c.listed[u] = true
		}
	}
	return c
}

func (c *isolation) checked(user string) bool {
	if c.listed != nil {
		return c.listed[user]
	}
	return user != ""
}

// Observe notes the checked users.
func (c *isolation) Observe(ev traffic.Event, _ engine.Outcome) {
	if !c.checked(ev.User) {
		return
	}
	if _, seen := c.together[ev.User]; !seen {
		if c.listed == nil {
			c.users = append(c.users, ev.User)
		}
		c.together[ev.User] = nil
	}
}

// mismatch is a checked call whose outcome alone differs from among everybody.
type mismatch struct {
	user            string
	n               int // the call's place among the user's calls
	ev              traffic.Event
	alone, together string
}

func (c *isolation) Finish(ctx context.Context, _ *engine.Result) (Result, error) {
	rp, err := c.newReplayer(c.cfg, ReplayOptions{OneReplica: true, NoDenyCache: true})
	if err != nil {
		return c.r, fmt.Errorf("isolation replay: %w", err)
	}
	defer rp.Close()
	clear(c.together)
	if err := c.replayTogether(ctx, rp, func(user string, _ int, o engine.Outcome) {
		c.together[user] = append(c.together[user], digest(o))
	}); err != nil {
		return c.r, err
	}
	var found []mismatch
	extra := 0
	for _, u := range c.users {
		n := 0
		_, err := rp.Replay(ctx, c.tr.Of(u), func(_ int, ev traffic.Event, o engine.Outcome) {
			c.compared++
			if want := c.together[u]; n >= len(want) || want[n] != digest(o) {
				if len(found) < maxViolations {
					found = append(found, mismatch{user: u, n: n, ev: ev, alone: describe(o)})
				} else {
					extra++
				}
			}
			n++
		})
		if err != nil {
			return c.r, fmt.Errorf("isolation replay of %s: %w", who(u), err)
		}
	}
	if err := c.report(ctx, rp, found, extra); err != nil {
		return c.r, err
	}
	return c.summary(), nil
}

// replayTogether replays everybody's calls under the check's config, handing on each
// checked call's outcome with its place among the user's calls.
func (c *isolation) replayTogether(ctx context.Context, rp Replayer, each func(user string, n int, o engine.Outcome)) error {
	seen := map[string]int{}
	_, err := rp.Replay(ctx, c.tr.All(), func(_ int, ev traffic.Event, o engine.Outcome) {
		if c.checked(ev.User) {
			each(ev.User, seen[ev.User], o)
			seen[ev.User]++
		}
	})
	if err != nil {
		return fmt.Errorf("isolation replay of everybody: %w", err)
	}
	return nil
}

// report turns the mismatches into violations. Only digests of the everybody run were
// kept, so it is replayed once more to describe those outcomes (replays are deterministic).
func (c *isolation) report(ctx context.Context, rp Replayer, found []mismatch, extra int) error {
	if len(found) == 0 {
		return nil
	}
	where := map[string]map[int]*mismatch{}
	for i := range found {
		m := &found[i]
		if where[m.user] == nil {
			where[m.user] = map[int]*mismatch{}
		}
		where[m.user][m.n] = m
	}
	if err := c.replayTogether(ctx, rp, func(user string, n int, o engine.Outcome) {
		if m := where[user][n]; m != nil {
			m.together = describe(o)
		}
	}); err != nil {
		return err
	}
	for _, m := range found {
		if m.together == "" {
			m.together = "no such call"
		}
		c.r.violate("%s %s %s: with everybody: %s; alone: %s", at(m.ev.At), who(m.user), callName(m.ev), m.together, m.alone)
	}
	c.r.Count += extra
	return nil
}

func (c *isolation) summary() Result {
	r := c.r
	scope := "per-user buckets"
	if c.iso.Scope == scenario.ScopeAll {
		scope = "all buckets"
	}
	switch {
	case r.OK && c.compared == 0:
		r = vacuous(Isolation, fmt.Sprintf("no identified user made a call to compare (%s)", scope))
	case r.OK:
		r.Summary = fmt.Sprintf("%s: the same outcome for each of their %s with and without the other users' traffic (%s)", plural(len(c.users), "user"), plural(c.compared, "call"), scope)
	default:
		r.Summary = fmt.Sprintf("%s changed when the other users' traffic was removed (%s)", plural(r.Count, "outcome"), scope)
	}
	return r
}

// digest sums up what isolation compares of an outcome: what became of the call, its
// RetryAfter, which buckets applied and the remaining tokens of the per-user ones (a
// shared bucket's remaining tokens differ with other users' traffic by design). FNV-1a,
// 64 bits: two different outcomes of one call share a digest with a chance of 2^-64.
func digest(o engine.Outcome) uint64 {
	h := fnv{sum: 14695981039346656037}
	h.str(string(o.Outcome))
	h.int(int64(o.RetryAfter))
	h.int(int64(len(o.Buckets)))
	for _, b := range o.Buckets {
		h.str(string(b.Scope))
		h.str(b.Kind)
		h.str(b.Name)
		h.str(b.Tier)
		if b.Scope == ratelimit.ScopePerUser {
			h.int(b.Remaining)
		}
	}
	return h.sum
}

type fnv struct{ sum uint64 }

func (f *fnv) byte(b byte) {
	f.sum ^= uint64(b)
	f.sum *= 1099511628211
}

func (f *fnv) str(s string) {
	f.int(int64(len(s)))
	for i := 0; i < len(s); i++ {
		f.byte(s[i])
	}
}

func (f *fnv) int(n int64) {
	for i := range 8 {
		f.byte(byte(n >> (8 * i)))
	}
}

func describe(o engine.Outcome) string {
	s := string(o.Outcome)
	if o.Rejected != nil {
		s += fmt.Sprintf(" by %s, retry after %s", o.Rejected, o.RetryAfter)
	}
	var left []string
	for _, b := range o.Buckets {
		left = append(left, fmt.Sprintf("%s %d", b.BucketID, b.Remaining))
	}
	if len(left) > 0 {
		s += " (left: " + strings.Join(left, ", ") + ")"
	}
	return s
}
