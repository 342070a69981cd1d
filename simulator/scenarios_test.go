package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/report"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// shipped lists the scenario files in scenarios/.
func shipped(t *testing.T) []string {
	t.Helper()
	files, err := scenario.Files([]string{filepath.Join("..", "scenarios")})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Errorf("%d scenarios in scenarios/, want at least 10", len(files))
	}
	return files
}

func prepare(t *testing.T, file string) *sim.Prepared {
	t.Helper()
	s, err := scenario.Load(file)
	if err != nil {
		t.Fatalf("invalid scenario: %v", err)
	}
	p, err := sim.Prepare(s, nil)
	if err != nil {
		t.Fatalf("invalid scenario: %v", err)
	}
	return p
}

func baseName(f string) string { return strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)) }

// collect is an observer that keeps every outcome.
func collect(outs *[]engine.Outcome) engine.Observer {
	return func(_ int, _ traffic.Event, o engine.Outcome) { *outs = append(*outs, o) }
}

// TestScenarios replays every scenario in scenarios/ as a subtest: the project's test
// command is the CI job that fails on a regression in fairness or correctness. Each is also
// replayed with --engine model, which must give the same outcome for every event (allowed,
// rejected, shadow-rejected, invalid or unidentified) as the real limiter on Redis. The model
// has no deny cache: with outages, where the cache still refuses what it knows while the
// failure policy answers the rest, the model is compared with a replay without the cache (and
// so, under failurePolicy Local, the local buckets' decisions with the model's).
func TestScenarios(t *testing.T) {
	for _, f := range shipped(t) {
		t.Run(baseName(f), func(t *testing.T) {
			t.Parallel()
			p := prepare(t, f)
			var res []engine.Outcome
			r, err := p.RunObserved(t.Context(), nil, collect(&res))
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if len(p.Scenario.Outages()) > 0 {
				p.NoDenyCache, res = true, nil
				if _, err := p.Replay(t.Context(), collect(&res)); err != nil {
					t.Fatalf("replay without the deny cache: %v", err)
				}
			}
			p.Engine = sim.EngineModel
			var modelRes []engine.Outcome
			if _, err := p.Replay(t.Context(), collect(&modelRes)); err != nil {
				t.Fatalf("model engine: %v", err)
			}
			want, got := outcomes(res), outcomes(modelRes)
			if !slices.Equal(want, got) {
				t.Errorf("the engines disagree: per-event outcomes -redis +model:\n%s", cmp.Diff(want, got))
			}
			if len(want) != p.Traffic.Count || !slices.Contains(want, ratelimit.OutcomeAllowed) {
				t.Errorf("%d outcomes for %d events, none allowed: the comparison proves nothing", len(want), p.Traffic.Count)
			}
			if !r.OK {
				t.Errorf("expectations failed:\n%s", text(t, r))
			}
		})
	}
}

// TestLuaHostsAgree replays every shipped scenario with the script run in the engine's
// in-process Lua host and with miniredis's own EVAL: every outcome (verdict, buckets,
// RetryAfter, Redis time, the peeks around refusals) and the whole report (every property's
// verdict, script calls, key statistics) must be the same. The in-process host is what
// makes replays fast; this is what makes them the same replays. Both replay with the deny
// cache, as every run does; denyCacheExact's second replay, without it, is left out: it
// would only replay the same script calls again (and double the slow EVAL side).
func TestLuaHostsAgree(t *testing.T) {
	for _, f := range shipped(t) {
		t.Run(baseName(f), func(t *testing.T) {
			t.Parallel()
			p := prepare(t, f)
			off := false
			p.Scenario.Expect.DenyCacheExact = &off
			var inProcess, eval []engine.Outcome
			want, err := p.RunObserved(t.Context(), nil, collect(&inProcess))
			if err != nil {
				t.Fatal(err)
			}
			p.MiniredisEval = true
			got, err := p.RunObserved(t.Context(), nil, collect(&eval))
			if err != nil {
				t.Fatal(err)
			}
			// BucketState keeps the script's level unexported: the hosts must agree on it too.
			if diff := cmp.Diff(inProcess, eval, cmp.AllowUnexported(ratelimit.BucketState{})); diff != "" {
				t.Errorf("outcomes: -in-process +miniredis EVAL:\n%s", diff)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("reports: -in-process +miniredis EVAL:\n%s", diff)
			}
		})
	}
}

func text(t *testing.T, r *report.Scenario) string {
	t.Helper()
	var b strings.Builder
	if err := report.WriteText(&b, &report.Report{Scenarios: []*report.Scenario{r}}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func outcomes(res []engine.Outcome) []ratelimit.Outcome {
	out := make([]ratelimit.Outcome, len(res))
	for i, o := range res {
		out[i] = o.Outcome
	}
	return out
}
