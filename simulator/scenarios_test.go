package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/simulator/report"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
)

// TestScenarios replays every scenario in scenarios/ as a subtest: the project's test
// command is the CI job that fails on a regression in fairness or correctness.
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
			r, err := p.Run(t.Context(), nil)
			if err != nil {
				t.Fatalf("run: %v", err)
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
