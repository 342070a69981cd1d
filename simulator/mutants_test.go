package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
)

// scriptMutant is the limiter's Lua script with one deliberate bug: one piece of
// ratelimit.ScriptSource() replaced by another. The simulator's properties exist to catch
// such bugs; a scenario that a mutant passes proves nothing about that bug.
type scriptMutant struct {
	name     string
	old, new string
}

var (
	// oneByOne takes the cost from every bucket that holds it, even when another bucket is
	// short: buckets consumed one by one instead of all or nothing (the seed project's bug,
	// in both directions).
	oneByOne = scriptMutant{
		name: "consumeOneByOne",
		old:  "if out[1] == 1 then\n  for i = 1, #KEYS do\n    local max, period, cost = read(FORMAT, args, SIZE * i - SIZE + 1)\n",
		new:  "for i = 1, #KEYS do\n  local max, period, cost = read(FORMAT, args, SIZE * i - SIZE + 1)\n  if out[i + 2] >= cost * period then\n",
	}
	// refillShort refills every bucket one microsecond less than the time elapsed.
	refillShort = scriptMutant{
		name: "refillShortBy1us",
		old:  "local elapsed = now - ts\n",
		new:  "local elapsed = now - ts - 1\n",
	}
	// capacityPlusOne holds one token more than maxTokens.
	capacityPlusOne = scriptMutant{
		name: "capacityPlusOne",
		old:  "local cap = max * period",
		new:  "local cap = (max + 1) * period",
	}
	// wholeTokens refills whole tokens only, losing the fraction of a token that the time
	// since the bucket was last written earned.
	wholeTokens = scriptMutant{
		name: "refillWholeTokens",
		old:  "local refill = elapsed * max\n",
		new:  "local refill = math.floor(elapsed * max / period) * period\n",
	}
	mutants = []scriptMutant{oneByOne, refillShort, capacityPlusOne, wholeTokens}
)

// source is the mutated script. It fails the test when the piece to replace is not in the
// script exactly once: a change to the script must not silently disarm a mutant.
func (m scriptMutant) source(t testing.TB) string {
	t.Helper()
	src := ratelimit.ScriptSource()
	if n := strings.Count(src, m.old); n != 1 {
		t.Fatalf("mutant %s: the piece it replaces is in the script %d times, want exactly 1: update the mutant to the script\npiece:\n%s", m.name, n, m.old)
	}
	return strings.Replace(src, m.old, m.new, 1)
}

// mutant builds every replica's limiter with the mutated script.
func mutant(t testing.TB, m scriptMutant) engine.LimiterFunc {
	src := m.source(t)
	return func(client redis.Scripter, ns, name string, cfg *v1alpha1.RateLimitConfig, opts ...ratelimit.Option) (engine.Decider, error) {
		return ratelimit.New(client, ns, name, cfg, append(opts, ratelimit.WithScript(src))...)
	}
}

// cannotCatch lists, per mutant, the shipped scenarios that cannot catch it, and why: no
// traffic of that scenario's config could tell the mutant from the real script. Each reason
// is also written as a comment in the scenario.
var cannotCatch = map[string]map[string]string{
	oneByOne.name: {
		"burst-then-idle":       "every call meets exactly one bucket (perUser): all or nothing and one by one are the same",
		"daily-quota":           "every call meets exactly one bucket (perUser): all or nothing and one by one are the same",
		"shadow-mode":           "every call meets exactly one bucket (perUser): all or nothing and one by one are the same",
		"prompts-and-resources": "every call meets at most one bucket (a prompt's perUser or a resource's shared): all or nothing and one by one are the same",
	},
}

// TestMutantsAreCaught replays every shipped scenario with each mutant of the script: each
// must fail (consumeOneByOne by its observed rejectionChangesNoBucket, the others by any
// property) unless cannotCatch says why it cannot. A scenario listed there that catches the
// mutant after all must be taken off the list, so that the list stays true.
func TestMutantsAreCaught(t *testing.T) {
	for _, m := range mutants {
		limiter := mutant(t, m)
		for _, f := range shipped(t) {
			name := baseName(f)
			t.Run(m.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				failing := failingChecks(t, f, limiter)
				why, excused := cannotCatch[m.name][name]
				switch {
				case excused && len(failing) > 0:
					t.Errorf("listed as unable to catch %s (%s), yet it fails %v: take it off cannotCatch and its comment", m.name, why, failing)
				case excused:
				case len(failing) == 0:
					t.Errorf("the scenario passes with the %s mutant: add an expectation that catches it, or list it in cannotCatch with the reason", m.name)
				case m == oneByOne && !slices.Contains(failing, check.RejectionChangesNoBucket):
					t.Errorf("%s fails %v but not %s, which observes the tokens a refused decision took", m.name, failing, check.RejectionChangesNoBucket)
				}
			})
		}
	}
}

// failingChecks replays a scenario file with limiter and names the properties that fail.
//
// denyCacheExact is left out: it compares the limiter with itself, cache on and off, so a
// mutant of the script is the same mutant in both replays; the cache's own mutant is a
// fixture of TestCheckersFail. Its second replay would double the cost of this test.
func failingChecks(t *testing.T, file string, limiter engine.LimiterFunc) []string {
	t.Helper()
	p := prepare(t, file)
	off := false
	p.Scenario.Expect.DenyCacheExact = &off
	r, err := p.Run(t.Context(), limiter)
	if err != nil {
		t.Fatal(err)
	}
	var failing []string
	for _, c := range r.Checks {
		if !c.OK {
			failing = append(failing, c.Name)
		}
	}
	return failing
}
