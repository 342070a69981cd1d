package cli

import (
	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/sim"
)

// SetMemoryLimit, when not nil, is handed a soft limit on the process's memory, in bytes,
// before the replays start (memoryLimit). The simulator binary sets the runtime's
// (debug.SetMemoryLimit) unless GOMEMLIMIT is set; tests leave it nil, so that a test
// process keeps its own.
var SetMemoryLimit func(bytes int64)

// The expected working set of a run, from which memoryLimit sets the soft limit. Why a
// limit: with GOGC=100 the heap grows to twice what the last collection found alive before
// the next collection starts, and a replay through the real limiter allocates fast
// (gopher-lua's tables, patterns and strings, several KB a decision), so that headroom is
// almost all garbage: the 1 000 000 calls of 100 000 users (simulator/testdata/big) keep
// about 190-220 MB alive and peaked at 545-585 MB of RSS on a loaded machine.
//
// Per user, what a run keeps alive while the user is active: their per-user buckets' keys
// in miniredis with their expiry entries, the deny cache's entries and the checks' model and
// envelope buckets (per bucket); the report's and the checks' tallies and the generator's
// state (per user). Measured on that run (two per-user buckets), docs/benchmarks.md. The
// model engine has no Redis: about half. A trace's events are held for the run.
//
// The headroom, 8/5 of the working set rather than GOGC's 2×, is a trade: the collector
// runs more often once the heap nears the limit, and not at all below it, so a small run
// never meets it. Measured on the 100 000-user run: 288-294 MB of RSS instead of 545-585, for
// 1.2-1.3× the CPU; 3/2 cost 1.7× (docs/benchmarks.md). An estimate too low costs CPU, never a
// result: below the live heap the collector runs back to back, capped by the runtime at
// about half the CPU.
const (
	workingSetBase        = 16 << 20
	workingSetUser        = 500 // bytes a user, beside their buckets
	workingSetUserBucket  = 550 // bytes a per-user bucket of a user
	workingSetTraceEvent  = 200 // bytes an event of a trace
	workingSetHeadroomNum = 8   // the limit is 8/5 of the working set
	workingSetHeadroomDen = 5   //
	workingSetModelDen    = 2   // the model engine's per-user share: half
)

// memoryLimit is the soft memory limit for replaying prepared: 8/5 of their expected working
// set, summed over all of them (up to four replay at once).
func memoryLimit(prepared []*sim.Prepared) int64 {
	total := int64(workingSetBase)
	for _, p := range prepared {
		users := int64(len(p.Traffic.Requests))
		perUser := workingSetUser + workingSetUserBucket*int64(perUserBuckets(p.Scenario.RateLimiting))
		if p.Engine == sim.EngineModel {
			perUser /= workingSetModelDen
		}
		total += users*perUser + workingSetTraceEvent*int64(p.Traffic.Resident())
	}
	return total * workingSetHeadroomNum / workingSetHeadroomDen
}

// perUserBuckets is how many per-user buckets one user can have: the default ones, or a
// tier's, whichever are more.
func perUserBuckets(cfg *v1alpha1.RateLimitConfig) int {
	if cfg == nil {
		return 0
	}
	n := 0
	if cfg.PerUser != nil {
		n++
	}
	for _, t := range cfg.Tools {
		if t.PerUser != nil {
			n++
		}
	}
	for _, p := range cfg.Prompts {
		if p.PerUser != nil {
			n++
		}
	}
	for _, r := range cfg.Resources {
		if r.PerUser != nil {
			n++
		}
	}
	most := n
	for _, t := range cfg.Tiers {
		// A tier's perUser and tools replace default ones: at most all of them plus its own.
		most = max(most, n+len(t.Tools)+1)
	}
	return most
}
