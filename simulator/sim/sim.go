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

// Prepared is a scenario with its traffic generated: everything that can make it invalid
// has been checked.
type Prepared struct {
	Scenario *scenario.Scenario
	Seed     uint64
	Traffic  *traffic.Traffic
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

// Run replays the traffic, checks the properties and builds the report. newLimiter is nil
// for the real limiter (tests pass faulty ones).
func (p *Prepared) Run(ctx context.Context, newLimiter engine.LimiterFunc) (*report.Scenario, error) {
	s := p.Scenario
	opts := engine.Options{
		Namespace: s.Server.Namespace, Name: s.Server.Name, Config: s.RateLimiting,
		Replicas: s.Replicas, Epoch: p.Traffic.Epoch, NewLimiter: newLimiter,
		Observe: scenario.On(s.Expect.PerUserRejectionNeverDrainsShared),
	}
	res, err := engine.Run(ctx, opts, p.Traffic.Events)
	if err != nil {
		return nil, err
	}
	rerun := func(ctx context.Context, cfg *v1alpha1.RateLimitConfig, groups [][]traffic.Event) ([]*engine.Result, error) {
		o := opts
		o.Config, o.Replicas, o.Observe = cfg, 1, false
		return engine.RunEach(ctx, o, groups)
	}
	checks, err := check.All(ctx, check.Input{Scenario: s, Traffic: p.Traffic, Result: res, Rerun: rerun})
	if err != nil {
		return nil, err
	}
	return report.Build(s, p.Seed, p.Traffic, res, checks), nil
}
