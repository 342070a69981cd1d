// Package sim runs one scenario end to end: its traffic through the real limiter, the
// properties it expects, and the report of it. A run is one stream: each call is generated,
// decided, judged by every property and counted in the report as it comes, and then
// forgotten, so that a run's memory does not grow with its length.
package sim

import (
	"context"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/report"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// DefaultSeed is the seed of a scenario that sets none, when no --seed is given.
const DefaultSeed = 1

// Engines: what decides the calls.
const (
	// EngineRedis is the real limiter (its Lua script) on an embedded Redis: the default.
	EngineRedis = "redis"
	// EngineModel is the reference model (package model), for traces too big for Redis:
	// the same decisions, nothing observed in Redis.
	EngineModel = report.EngineModel
)

// Prepared is a scenario with its traffic generated: everything that can make it invalid
// has been checked.
type Prepared struct {
	Scenario *scenario.Scenario
	Seed     uint64
	Traffic  *traffic.Traffic
	// Engine is EngineRedis ("" too) or EngineModel.
	Engine string
	// MiniredisEval runs the limiter's script with miniredis's own EVAL instead of the
	// in-process Lua host (engine.Options.MiniredisEval): slower, the same decisions.
	MiniredisEval bool
	// Progress, when set, is told how far the main replay is (not the isolation replays).
	Progress func(done, total int)
	// NoDenyCache replays without the limiters' deny cache (engine.Options.NoDenyCache).
	NoDenyCache bool
	// NewLocal builds the replicas' local buckets for failurePolicy Local (nil: the proxy's,
	// engine.RealLocal); tests pass faulty ones.
	NewLocal engine.LocalFunc
}

// Prepare generates a scenario's traffic (a counting pass over it: a scenario with too many
// calls is invalid). seed overrides the scenario's own when not nil. Errors are
// *scenario.Error: the scenario (or its trace) is invalid.
func Prepare(s *scenario.Scenario, seed *uint64) (*Prepared, error) {
	p := &Prepared{Scenario: s, Seed: s.SeedOr(DefaultSeed)}
	if seed != nil {
		p.Seed = *seed
	}
	tr, err := traffic.Generate(s, p.Seed)
	if err != nil {
		return nil, err
	}
	p.Traffic = tr
	return p, nil
}

// options are the engine options of the scenario's main replay.
func (p *Prepared) options(newLimiter engine.LimiterFunc) engine.Options {
	s := p.Scenario
	return engine.Options{
		Namespace: s.Server.Namespace, Name: s.Server.Name, Config: s.RateLimiting,
		Replicas: s.Replicas, Epoch: p.Traffic.Epoch, NewLimiter: newLimiter,
		Observe: scenario.On(s.Expect.RejectionChangesNoBucket),
		Model:   p.Engine == EngineModel, MiniredisEval: p.MiniredisEval,
		Progress: p.Progress, Total: p.Traffic.Count,
		Outages: outages(s), NewLocal: p.NewLocal, NoDenyCache: p.NoDenyCache,
	}
}

// outages are the scenario's faults as the engine takes them.
func outages(s *scenario.Scenario) []engine.Outage {
	var out []engine.Outage
	for _, w := range s.Outages() {
		out = append(out, engine.Outage{From: w.From.Duration, To: w.To.Duration})
	}
	return out
}

// Replay decides every call and checks nothing, handing each outcome to observe: what
// `simulator whatif` needs.
func (p *Prepared) Replay(ctx context.Context, observe engine.Observer) (*engine.Result, error) {
	opts := p.options(nil)
	opts.Observe = false
	return engine.Stream(ctx, opts, p.Traffic.All(), observe)
}

// Run replays the traffic, checks the properties and builds the report. newLimiter is nil
// for the real limiter (tests pass faulty ones).
func (p *Prepared) Run(ctx context.Context, newLimiter engine.LimiterFunc) (*report.Scenario, error) {
	return p.RunObserved(ctx, newLimiter, nil)
}

// RunObserved is Run, also handing each outcome of the main replay to observe (when not
// nil): TestScenarios compares them with the other engine's.
func (p *Prepared) RunObserved(ctx context.Context, newLimiter engine.LimiterFunc, observe engine.Observer) (*report.Scenario, error) {
	s := p.Scenario
	opts := p.options(newLimiter)
	checkers := check.Start(check.Input{Scenario: s, Traffic: p.Traffic, Replayer: p.replayer(opts), Model: opts.Model, Outages: opts.Outages})
	b := report.NewBuilder(s, p.Seed, p.Traffic)
	res, err := engine.Stream(ctx, opts, p.Traffic.All(), func(i int, ev traffic.Event, o engine.Outcome) {
		for _, c := range checkers {
			c.Observe(ev, o)
		}
		b.Observe(ev, o)
		if observe != nil {
			observe(i, ev, o)
		}
	})
	if err != nil {
		return nil, err
	}
	checks, err := check.Finish(ctx, checkers, res)
	if err != nil {
		return nil, err
	}
	r := b.Finish(res, checks)
	if opts.Model {
		r.Engine = EngineModel
	}
	return r, nil
}

// replayer makes the engine sessions properties replay with (isolation, denyCacheExact):
// the main replay's limiter, engine and outages, nothing observed, under another config (nil:
// the same) and as ro says.
func (p *Prepared) replayer(opts engine.Options) check.NewReplayer {
	return func(cfg *v1alpha1.RateLimitConfig, ro check.ReplayOptions) (check.Replayer, error) {
		o := opts
		if cfg != nil {
			o.Config = cfg
		}
		if ro.OneReplica {
			o.Replicas = 1
		}
		o.NoDenyCache = ro.NoDenyCache
		o.Observe, o.Progress, o.Total = false, nil, 0
		return engine.NewSession(o)
	}
}
