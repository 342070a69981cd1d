package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/sim"
)

var (
	whatIfTrace = filepath.Join("..", "testdata", "whatif", "decisions.jsonl")
	pass        = filepath.Join("..", "testdata", "pass", "small.yaml")
	counts      = filepath.Join("..", "testdata", "fail", "counts.yaml")
	invalid     = filepath.Join("..", "testdata", "invalid", "unknown-field.yaml")
)

func TestMainExitStatus(t *testing.T) {
	cases := map[string]struct {
		reason     string
		args       []string
		want       int
		wantOut    string // in standard output
		wantErrOut string // in standard error
	}{
		"Pass": {
			reason: "every expectation holds: 0", args: []string{"run", pass}, want: ExitOK,
			wantOut: "1 scenario: 1 passed, 0 failed",
		},
		"Fail": {
			reason: "an expectation fails: 1, with the violation", args: []string{"run", counts}, want: ExitFailed,
			wantOut: `counts[0] (user "alice"): admitted 9, want 12`,
		},
		"Invalid": {
			reason: "an invalid scenario: 2, naming file, line, column and field; nothing runs", args: []string{"run", pass, invalid}, want: ExitInvalid,
			wantErrOut: "invalid scenario: " + invalid + ":10:5: traffic[0].burst: unknown field",
		},
		"FolderMixed": {
			reason: "a folder runs every scenario in it; one failure fails the run", args: []string{"run", filepath.Join("..", "testdata", "pass"), counts}, want: ExitFailed,
			wantOut: "2 scenarios: 1 passed, 1 failed",
		},
		"FlagsAfterPaths": {
			reason: "flags may follow the paths", args: []string{"run", pass, "--seed", "7"}, want: ExitOK,
			wantOut: "seed 7:",
		},
		"FlagsWithoutRun": {
			reason: "flags alone mean run", args: []string{"--seed", "7", pass}, want: ExitOK,
			wantOut: "seed 7:",
		},
		"BadFormat": {
			reason: "a wrong flag value is a usage error", args: []string{"run", "--format", "xml", pass}, want: ExitInvalid,
			wantErrOut: `--format "xml": want text or json`,
		},
		"UnknownCommand": {
			reason: "a path without run is not guessed at", args: []string{pass}, want: ExitInvalid,
			wantErrOut: "unknown command",
		},
		"MissingFile": {
			reason: "a path that does not exist", args: []string{"run", "nope.yaml"}, want: ExitInvalid,
			wantErrOut: "nope.yaml",
		},
		"EngineModel": {
			reason: "--engine model decides with the reference model and says so; the Redis-only properties are not applicable", args: []string{"run", "--engine", "model", pass}, want: ExitOK,
			wantOut: "N/A  rejectionChangesNoBucket: not applicable with --engine model",
		},
		"BadEngine": {
			reason: "an unknown engine is a usage error", args: []string{"run", "--engine", "lua", pass}, want: ExitInvalid,
			wantErrOut: `--engine "lua": want redis or model`,
		},
		"WhatIfNoConfig": {
			reason: "whatif needs both a trace and a config", args: []string{"whatif", "--trace", "x.jsonl"}, want: ExitInvalid,
			wantErrOut: "whatif needs --trace and --config",
		},
		"WhatIfInvalidConfig": {
			reason: "a config that is not a valid scenario is invalid, named with its position", args: []string{"whatif", "--trace", whatIfTrace, "--config", invalid}, want: ExitInvalid,
			wantErrOut: invalid + ":10:5: traffic[0].burst: unknown field",
		},
		"Help": {
			reason: "help is not an error", args: []string{"help"}, want: ExitOK,
			wantOut: "usage:",
		},
		"Demo": {
			reason: "the built-in demo still runs", args: []string{"demo"}, want: ExitOK,
			wantOut: "Tollgate limiter demo",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			got := Main(t.Context(), tc.args, &stdout, &stderr)
			if got != tc.want {
				t.Errorf("%s\nexit status: got %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.reason, got, tc.want, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantOut) {
				t.Errorf("%s\nstdout does not contain %q:\n%s", tc.reason, tc.wantOut, stdout.String())
			}
			if !strings.Contains(stderr.String(), tc.wantErrOut) {
				t.Errorf("%s\nstderr does not contain %q:\n%s", tc.reason, tc.wantErrOut, stderr.String())
			}
		})
	}
}

// TestDefaultRunsScenariosFolder checks that a bare `simulator` runs ./scenarios and says
// where the report went.
func TestDefaultRunsScenariosFolder(t *testing.T) {
	data, err := os.ReadFile(pass)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "scenarios"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scenarios", "small.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	if got := Main(t.Context(), nil, &stdout, &stderr); got != ExitOK {
		t.Fatalf("exit status %d, stderr:\n%s", got, stderr.String())
	}
	if !strings.Contains(stdout.String(), "PASS small (scenarios/small.yaml)") {
		t.Errorf("a bare run must replay scenarios/:\n%s", stdout.String())
	}
	stdout.Reset()
	if got := Main(t.Context(), []string{"--report", "out"}, &stdout, &stderr); got != ExitOK {
		t.Fatalf("exit status %d, stderr:\n%s", got, stderr.String())
	}
	if !strings.Contains(stdout.String(), "report: out/index.html (charts), out/report.json, out/report.txt") {
		t.Errorf("the summary must say where the report is:\n%s", stdout.String())
	}

	if err := os.RemoveAll(filepath.Join(dir, "scenarios")); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if got := Main(t.Context(), nil, &stdout, &stderr); got != ExitInvalid || !strings.Contains(stderr.String(), "run from the repository root") {
		t.Errorf("without scenarios/: exit %d, stderr %q; want %d and a hint", got, stderr.String(), ExitInvalid)
	}
}

// TestReportIsDeterministic runs the same scenario twice, and once with another seed: the
// same seed must give byte-identical reports (JSON, HTML, text), another seed other calls.
func TestReportIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	run := func(sub, seed string) map[string][]byte {
		t.Helper()
		var stdout, stderr bytes.Buffer
		out := filepath.Join(dir, sub)
		if got := Main(t.Context(), []string{"run", "--seed", seed, "--report", out, pass}, &stdout, &stderr); got != ExitOK {
			t.Fatalf("exit status %d, stderr:\n%s", got, stderr.String())
		}
		files := map[string][]byte{}
		for _, f := range []string{"index.html", "report.json", "report.txt"} {
			b, err := os.ReadFile(filepath.Join(out, f))
			if err != nil {
				t.Fatal(err)
			}
			files[f] = b
		}
		return files
	}
	a, b, other := run("a", "3"), run("b", "3"), run("c", "4")
	for f := range a {
		if !bytes.Equal(a[f], b[f]) {
			t.Errorf("%s differs between two runs with the same seed:\n%s", f, cmp.Diff(string(a[f]), string(b[f])))
		}
	}
	if bytes.Equal(a["report.json"], other["report.json"]) {
		t.Error("another seed gave the same report")
	}
	var rep struct {
		Scenarios []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Seed   uint64 `json:"seed"`
			Checks []struct {
				Name string `json:"name"`
				OK   bool   `json:"ok"`
			} `json:"checks"`
		} `json:"scenarios"`
		Passed int `json:"passed"`
	}
	if err := json.Unmarshal(a["report.json"], &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 1 || rep.Scenarios[0].Seed != 3 || !rep.Scenarios[0].OK || len(rep.Scenarios[0].Checks) != 6 {
		t.Errorf("report.json: got %+v, want one passing scenario with seed 3 and 6 checks (denyCacheExact among them)", rep)
	}
	if !bytes.Contains(a["index.html"], []byte("<svg")) {
		t.Error("index.html has no chart")
	}
}

func TestFormatJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if got := Main(t.Context(), []string{"run", "--format", "json", counts}, &stdout, &stderr); got != ExitFailed {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", got, ExitFailed, stderr.String())
	}
	var rep struct {
		Failed int `json:"failed"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("standard output is not JSON: %v\n%s", err, stdout.String())
	}
	if rep.Failed != 1 {
		t.Errorf("failed: got %d, want 1", rep.Failed)
	}
}

// TestWhatIf replays a small decision log under a proposed per-user limit of 2 calls a
// minute: ann's third search, allowed then, would now be refused; bob's first fetch, refused
// then, would now get through. The config is read from an MCPServer manifest or a scenario,
// and both engines tell the same.
func TestWhatIf(t *testing.T) {
	want := "what if " + whatIfTrace + ` had run under the proposed rateLimiting of tools/proposed?
5 calls replayed (1 records skipped): 1 now rejected that got through, 1 now admitted that were refused

USER     CALLS  NOW-REJECTED  NOW-ADMITTED
ann          3             1             0
bob          2             0             1

TOOL                  CALLS  NOW-REJECTED  NOW-ADMITTED
tools/call fetch          2             0             1
tools/call search         3             1             0
`
	cases := map[string]struct {
		reason string
		config string
		engine string
	}{
		"Manifest": {reason: "an MCPServer manifest: spec.rateLimiting, namespace and name from metadata", config: "mcpserver.yaml", engine: "redis"},
		"Scenario": {reason: "a scenario file: its rateLimiting and server", config: "scenario.yaml", engine: "redis"},
		"Model":    {reason: "the model engine decides as the limiter does", config: "mcpserver.yaml", engine: "model"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			args := []string{"whatif", "--trace", whatIfTrace, "--config", filepath.Join("..", "testdata", "whatif", tc.config), "--engine", tc.engine}
			if got := Main(t.Context(), args, &stdout, &stderr); got != ExitOK {
				t.Fatalf("%s\nexit status %d, stderr:\n%s", tc.reason, got, stderr.String())
			}
			if diff := cmp.Diff(want, stdout.String()); diff != "" {
				t.Errorf("%s\noutput: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestWhatIfTiers replays a decision log whose records carry tiers: ann's pro calls are
// decided in the proposal's pro tier (5 a minute: unchanged), cy's in no tier (2 a minute:
// the third now refused), and bob's gold tier, which the proposal no longer has, with the
// default buckets, said in a warning and in the tier table. Both engines tell the same.
func TestWhatIfTiers(t *testing.T) {
	trace := filepath.Join("..", "testdata", "whatif", "tiers.jsonl")
	want := "what if " + trace + ` had run under the proposed rateLimiting of tools/proposed?
9 calls replayed (0 records skipped): 2 now rejected that got through, 0 now admitted that were refused
warning: 3 calls recorded in a tier the config does not have (gold 3): decided with the default buckets

USER                            CALLS  NOW-REJECTED  NOW-ADMITTED
bob [gold (not configured)]         3             1             0
cy [-]                              3             1             0

TOOL                  CALLS  NOW-REJECTED  NOW-ADMITTED
tools/call search         9             2             0

TIER                      CALLS  NOW-REJECTED  NOW-ADMITTED
-                             3             1             0
gold (not configured)         3             1             0
pro                           3             0             0
`
	for _, engine := range []string{"redis", "model"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			args := []string{"whatif", "--trace", trace, "--config", filepath.Join("..", "testdata", "whatif", "tiers.yaml"), "--engine", engine}
			if got := Main(t.Context(), args, &stdout, &stderr); got != ExitOK {
				t.Fatalf("exit status %d, stderr:\n%s", got, stderr.String())
			}
			if diff := cmp.Diff(want, stdout.String()); diff != "" {
				t.Errorf("output: -want +got:\n%s", diff)
			}
		})
	}
}

// TestMemoryLimit: the soft limit follows the working set: more users, more per-user
// buckets and the real limiter rather than the model each raise it, and run passes it to
// SetMemoryLimit before replaying.
func TestMemoryLimit(t *testing.T) {
	load := func(path, engine string) *sim.Prepared {
		t.Helper()
		s, err := scenario.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		p, err := sim.Prepare(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Engine = engine
		return p
	}
	big := load(filepath.Join("..", "..", "scenarios", "ten-thousand-users.yaml"), sim.EngineRedis)
	small := load(pass, sim.EngineRedis)
	model := load(filepath.Join("..", "..", "scenarios", "ten-thousand-users.yaml"), sim.EngineModel)
	floor := int64(workingSetBase * workingSetHeadroomNum / workingSetHeadroomDen)
	if got := memoryLimit(nil); got != floor {
		t.Errorf("memoryLimit(nothing) = %d, want the base %d", got, floor)
	}
	if s, b, m := memoryLimit([]*sim.Prepared{small}), memoryLimit([]*sim.Prepared{big}), memoryLimit([]*sim.Prepared{model}); floor >= s || s >= m || m >= b {
		t.Errorf("memoryLimit: small run %d, 10 000 users on the model %d, on Redis %d: want base %d < small < model < Redis", s, m, b, floor)
	}
	cfg := &v1alpha1.RateLimitConfig{PerUser: &v1alpha1.RateLimitBucket{MaxTokens: 1}, Tools: []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: &v1alpha1.RateLimitBucket{MaxTokens: 1}}, {Name: "b"}}}
	if got := perUserBuckets(cfg); got != 2 {
		t.Errorf("perUserBuckets = %d, want 2", got)
	}

	var limit int64
	SetMemoryLimit = func(n int64) { limit = n }
	defer func() { SetMemoryLimit = nil }()
	var out, errOut bytes.Buffer
	if code := Main(t.Context(), []string{"run", pass}, &out, &errOut); code != ExitOK {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	if limit != memoryLimit([]*sim.Prepared{small}) {
		t.Errorf("run set the limit to %d, want %d", limit, memoryLimit([]*sim.Prepared{small}))
	}
}
