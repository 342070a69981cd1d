// Package sim runs one scenario end to end: its traffic through the real limiter, the
// properties it expects, and the report of it.
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
	EngineModel = "model"
)

// Prepared is a scenario with its traffic generated: everything that can make it invalid
// has been checked.
type Prepared struct {
	Scenario *scenario.Scenario
	Seed     uint64
	Traffic  *traffic.Traffic
	// Engine is EngineRedis ("" too) or EngineModel.
	Engine string
	// Progress, when set, is told how far the main replay is (not the isolation replays).
	Progress func(done, total int)
}

// Prepare generates a scenario's traffic. seed overrides the scenario's own when not nil.
// Errors are *scenario.Error: the scenario (or its trace) is invalid.
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
		Observe: scenario.On(s.Expect.PerUserRejectionNeverDrainsShared),
		Model:   p.Engine == EngineModel, Progress: p.Progress,
	}
}

// Replay decides every call and checks nothing: what `simulator whatif` needs.
func (p *Prepared) Replay(ctx context.Context) (*engine.Result, error) {
	opts := p.options(nil)
	opts.Observe = false
	return engine.Run(ctx, opts, p.Traffic.Events)
}

// Run replays the traffic, checks the properties and builds the report. newLimiter is nil
// for the real limiter (tests pass faulty ones).
func (p *Prepared) Run(ctx context.Context, newLimiter engine.LimiterFunc) (*report.Scenario, error) {
	r, _, err := p.RunResult(ctx, newLimiter)
	return r, err
}

// RunResult is Run, also returning the main replay's outcomes (TestScenarios compares them
// with the other engine's).
func (p *Prepared) RunResult(ctx context.Context, newLimiter engine.LimiterFunc) (*report.Scenario, *engine.Result, error) {
	s := p.Scenario
	opts := p.options(newLimiter)
	res, err := engine.Run(ctx, opts, p.Traffic.Events)
	if err != nil {
		return nil, nil, err
	}
	rerun := func(ctx context.Context, cfg *v1alpha1.RateLimitConfig, groups [][]traffic.Event) ([]*engine.Result, error) {
		o := opts
		o.Config, o.Replicas, o.Observe, o.Progress = cfg, 1, false, nil
		return engine.RunEach(ctx, o, groups)
	}
	checks, err := check.All(ctx, check.Input{Scenario: s, Traffic: p.Traffic, Result: res, Rerun: rerun, Model: opts.Model})
	if err != nil {
		return nil, nil, err
	}
	r := report.Build(s, p.Seed, p.Traffic, res, checks)
	if opts.Model {
		r.Engine = EngineModel
	}
	return r, res, nil
}
