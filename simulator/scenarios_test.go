package main

import (
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/report"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
)

// TestScenarios replays every scenario in scenarios/ as a subtest: the project's test
// command is the CI job that fails on a regression in fairness or correctness. Each is also
// replayed with --engine model, which must give the same outcome for every event (allowed,
// rejected, shadow-rejected, invalid or unidentified) as the real limiter on Redis.
func TestScenarios(t *testing.T) {
	files, err := scenario.Files([]string{filepath.Join("..", "scenarios")})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Errorf("%d scenarios in scenarios/, want at least 10", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := scenario.Load(f)
			if err != nil {
				t.Fatalf("invalid scenario: %v", err)
			}
			p, err := sim.Prepare(s, nil)
			if err != nil {
				t.Fatalf("invalid scenario: %v", err)
			}
			r, res, err := p.RunResult(t.Context(), nil)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			p.Engine = sim.EngineModel
			modelRes, err := p.Replay(t.Context())
			if err != nil {
				t.Fatalf("model engine: %v", err)
			}
			want, got := outcomes(res), outcomes(modelRes)
			if !slices.Equal(want, got) {
				t.Errorf("the engines disagree: per-event outcomes -redis +model:\n%s", cmp.Diff(want, got))
			}
			if len(want) != len(p.Traffic.Events) || !slices.Contains(want, ratelimit.OutcomeAllowed) {
				t.Errorf("%d outcomes for %d events, none allowed: the comparison proves nothing", len(want), len(p.Traffic.Events))
			}
			if !r.OK {
				var b strings.Builder
				if err := report.WriteText(&b, &report.Report{Scenarios: []*report.Scenario{r}}); err != nil {
					t.Fatal(err)
				}
				t.Errorf("expectations failed:\n%s", b.String())
			}
		})
	}
}

func outcomes(res *engine.Result) []ratelimit.Outcome {
	out := make([]ratelimit.Outcome, len(res.Outcomes))
	for i, o := range res.Outcomes {
		out[i] = o.Outcome
	}
	return out
}
