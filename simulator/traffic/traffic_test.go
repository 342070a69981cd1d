package traffic

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
)

func load(t *testing.T, traffic string) *scenario.Scenario {
	t.Helper()
	s, err := scenario.Parse("t.yaml", []byte(`server: {namespace: default, name: x}
rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1s}
duration: 30s
traffic:
`+traffic))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// arrivalList lists (user, time) of the events, for compact expectations.
func arrivalList(events []Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.User+"@"+e.At.String())
	}
	return out
}

func TestGenerate(t *testing.T) {
	cases := map[string]struct {
		reason  string
		traffic string
		want    []string
	}{
		"Constant": {
			reason:  "evenly spaced at the rate, from start to before end",
			traffic: "  - {user: a, name: s, rate: 4/s, end: 1s}\n",
			want:    []string{"a@0s", "a@250ms", "a@500ms", "a@750ms"},
		},
		"ConstantPopulationSpread": {
			reason:  "a population's users are spread over one interval, not all at once",
			traffic: "  - {users: {count: 2, prefix: u}, name: s, rate: 1/s, start: 10s, end: 12s}\n",
			want:    []string{"u0@10s", "u1@10.5s", "u0@11s", "u1@11.5s"},
		},
		"Burst": {
			reason:  "rate N/period is N calls at once each period, every user together",
			traffic: "  - {users: {count: 2, prefix: u}, name: s, rate: 2/10s, pattern: burst, end: 20s}\n",
			want:    []string{"u0@0s", "u0@0s", "u1@0s", "u1@0s", "u0@10s", "u0@10s", "u1@10s", "u1@10s"},
		},
		"RampFromZero": {
			reason:  "the k-th call where the integral of a rate rising from 0 reaches k: 1/s after 4s of 0→1/s ramp is 2 calls",
			traffic: "  - {user: a, name: s, rate: 1/s, pattern: ramp, end: 4s}\n",
			want:    []string{"a@0s", "a@2.828427s"},
		},
		"Merged": {
			reason:  "two generators interleave by time; at one instant generator order holds",
			traffic: "  - {user: b, name: s, rate: 1/s, end: 2s}\n  - {user: a, name: s, rate: 2/s, end: 2s}\n",
			want:    []string{"b@0s", "a@0s", "a@500ms", "b@1s", "a@1s", "a@1.5s"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tr, err := Generate(load(t, tc.traffic), 1)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, arrivalList(tr.Events())); diff != "" {
				t.Errorf("%s\narrivals: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestGenerateRandom(t *testing.T) {
	s := load(t, `  - {users: {count: 3}, name: s, rate: 20/s, pattern: poisson}
  - {user: j, name: s, rate: 10/s, jitter: 50ms}
  - {user: r, name: s, rate: 20/s, pattern: ramp, from: 0/s}
`)
	one, err := Generate(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Generate(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(arrivalList(one.Events()), arrivalList(again.Events())); diff != "" {
		t.Errorf("the same seed must give the same calls: -first +second:\n%s", diff)
	}
	other, err := Generate(s, 2)
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Equal(arrivalList(one.Events()), arrivalList(other.Events())) {
		t.Error("another seed gave the same calls")
	}
	count := map[string]int{}
	events := one.Events()
	for i, e := range events {
		count[e.User]++
		if i > 0 && e.At < events[i-1].At {
			t.Fatalf("events out of order at %d: %s after %s", i, e.At, events[i-1].At)
		}
		if e.At%time.Microsecond != 0 {
			t.Fatalf("event at %s: not a whole microsecond", e.At)
		}
	}
	// Poisson: 600 expected per user (σ ≈ 25); jitter keeps the count; the ramp 0→20/s
	// over 30 s makes 300.
	for _, u := range []string{"user-0", "user-1", "user-2"} {
		if n := count[u]; n < 500 || n > 700 {
			t.Errorf("%s: %d Poisson calls at 20/s for 30s, want about 600", u, n)
		}
	}
	if count["j"] < 299 || count["j"] > 300 {
		t.Errorf("jittered constant 10/s for 30s: %d calls, want 300 (or 299 when the last is pushed past the end)", count["j"])
	}
	if count["r"] != 300 {
		t.Errorf("ramp 0→20/s over 30s: %d calls, want 300", count["r"])
	}
}

func TestGenerateTooMany(t *testing.T) {
	s := load(t, "  - {users: {count: 100000}, name: s, rate: 1/ms}\n")
	_, err := Generate(s, 1)
	var se *scenario.Error
	if !errors.As(err, &se) || se.Field != "traffic[0]" {
		t.Errorf("a runaway generator: got %v, want a scenario error at traffic[0]", err)
	}
}

func TestReadTrace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.jsonl")
	log := `{"time":"2026-11-25T09:00:01Z","method":"tools/call","name":"b","user":"u1","cost":1,"decision":"allowed"}
{"time":"2026-11-25T09:00:00Z","method":"initialize","cost":1,"decision":"unlimited"}
{"time":"2026-11-25T09:00:00.5Z","method":"tools/call","name":"a","user":"u1","cost":2,"decision":"rejected","newField":true}

{"time":"2026-11-25T09:00:02Z","method":"tools/call","name":"x","user":"u2","cost":1,"decision":"allowed","batch":2}
{"time":"2026-11-25T09:00:02Z","method":"prompts/get","name":"y","user":"u2","cost":1,"decision":"allowed","batch":2}
{"time":"2026-11-25T09:00:02Z","method":"tools/call","name":"z","user":"u2","cost":1,"decision":"allowed"}
`
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Trace{
		Epoch: time.Date(2026, 11, 25, 9, 0, 0, 500_000_000, time.UTC),
		Span:  1500 * time.Millisecond,
		Events: []Event{
			{At: 0, User: "u1", Calls: []Call{{"tools/call", "a", 2}}, Source: SourceTrace, Recorded: "rejected"},
			{At: 500 * time.Millisecond, User: "u1", Calls: []Call{{"tools/call", "b", 1}}, Source: SourceTrace, Recorded: "allowed"},
			{At: 1500 * time.Millisecond, User: "u2", Calls: []Call{{"tools/call", "x", 1}, {"prompts/get", "y", 1}}, Source: SourceTrace, Recorded: "allowed"},
			{At: 1500 * time.Millisecond, User: "u2", Calls: []Call{{"tools/call", "z", 1}}, Source: SourceTrace, Recorded: "allowed"},
		},
		Skipped: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sorted by time, initialize skipped, the batch of two grouped, unknown fields ignored: -want +got:\n%s", diff)
	}

	if err := os.WriteFile(path, []byte(log+"{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadTrace(path)
	var se *scenario.Error
	if !errors.As(err, &se) || se.Line != 8 {
		t.Errorf("a broken line: got %v, want a scenario error at line 8", err)
	}
}

// TestShippedTraceNamesUsersAsTheProxyDoes checks that the trace shipped with the scenarios
// holds user pseudonyms as the proxy writes them (ratelimit.HashUser), under the limiter's
// fixed simulation key: a proxy never uses that key (docs/privacy.md), but a shipped example
// must replay, and name its users, the same everywhere.
func TestShippedTraceNamesUsersAsTheProxyDoes(t *testing.T) {
	tr, err := ReadTrace(filepath.Join("..", "..", "scenarios", "traces", "what-if.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, e := range tr.Events {
		users[e.User] = true
	}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		if !users[ratelimit.HashUser(nil, u)] {
			t.Errorf("no calls from %s (%s) in the shipped trace", u, ratelimit.HashUser(nil, u))
		}
	}
}

// TestTraceErrorIsPlaced checks that a trace that cannot be read as a whole (here a line too
// long for a record) is reported at the scenario's trace field, with its line.
func TestTraceErrorIsPlaced(t *testing.T) {
	dir := t.TempDir()
	long := `{"time":"2026-11-25T09:00:01Z","method":"tools/call","name":"` + strings.Repeat("x", maxTraceLine) + `"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "t.jsonl"), []byte(long), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "s.yaml")
	s, err := scenario.Parse(file, []byte("rateLimiting:\n  perUser: {maxTokens: 3, refillPeriod: 1s}\ntrace: t.jsonl\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Generate(s, 1)
	var se *scenario.Error
	if !errors.As(err, &se) || se.File != file || se.Line != 3 || se.Field != "trace" {
		t.Errorf("got %v, want an error at %s:3 field trace", err, file)
	}
}

// TestStreamMatchesReference checks that the stream gives exactly the events, in exactly the
// order, of the former generator that made every call and sorted them (a stable sort: at one
// instant generator, user and arrival order, the trace last): every pattern, jitter,
// populations, starts and ends, and every shipped scenario.
func TestStreamMatchesReference(t *testing.T) {
	cases := map[string]*scenario.Scenario{
		"Patterns": load(t, `  - {users: {count: 7, prefix: p}, name: s, rate: 20/s, pattern: poisson, start: 1s}
  - {users: {count: 3, prefix: c}, name: s, rate: 3/s, end: 20s}
  - {users: {count: 4, prefix: b}, name: s, rate: 5/2s, pattern: burst, jitter: 300ms, batch: 2}
  - {user: j, name: s, rate: 10/s, jitter: 250ms, cost: 3}
  - {users: {count: 3, prefix: r}, name: s, rate: 20/s, pattern: ramp, from: 5/s, start: 2s, end: 25s}
  - {anonymous: true, name: t, rate: 1/s, pattern: burst, jitter: 2s}
  - {user: c0, name: u, rate: 7/3s}
`),
	}
	files, err := scenario.Files([]string{filepath.Join("..", "..", "scenarios")})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		s, err := scenario.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = s
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			for _, seed := range []uint64{1, 7} {
				tr, err := Generate(s, seed)
				if err != nil {
					t.Fatal(err)
				}
				want, got := reference(t, s, seed), tr.Events()
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("seed %d: the stream differs from the sorted list: -want +got:\n%s", seed, diff)
				}
				if tr.Count != len(want) {
					t.Errorf("seed %d: Count %d, want %d", seed, tr.Count, len(want))
				}
			}
		})
	}
}

// TestOf checks that one user's stream is exactly that user's events of the whole stream.
func TestOf(t *testing.T) {
	s := load(t, `  - {users: {count: 3, prefix: u}, name: s, rate: 5/s, pattern: poisson}
  - {user: u1, name: t, rate: 2/s, jitter: 1s}
  - {anonymous: true, name: s, rate: 1/s}
`)
	tr, err := Generate(s, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"u0", "u1", "u2", "", "nobody", "u01"} {
		var want []Event
		for e := range tr.All() {
			if e.User == user {
				want = append(want, e)
			}
		}
		if diff := cmp.Diff(want, slices.Collect(tr.Of(user))); diff != "" {
			t.Errorf("user %q: -want +got:\n%s", user, diff)
		}
	}
}

// TestTiers checks that calls carry their tier: a generator's users the tier their claims and
// headers resolve to, a trace's calls the tier recorded (a batch never spans two tiers), and
// that a recorded tier the config does not have is decided in no tier, marked and counted.
func TestTiers(t *testing.T) {
	dir := t.TempDir()
	log := `{"time":"2026-11-25T09:00:00Z","method":"tools/call","name":"a","user":"h1","tier":"pro","cost":1,"decision":"allowed","batch":2}
{"time":"2026-11-25T09:00:00Z","method":"tools/call","name":"b","user":"h1","tier":"gold","cost":1,"decision":"allowed","batch":2}
{"time":"2026-11-25T09:00:01Z","method":"tools/call","name":"c","user":"h2","tier":"gold","cost":1,"decision":"allowed"}
`
	if err := os.WriteFile(filepath.Join(dir, "t.jsonl"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := scenario.Parse(filepath.Join(dir, "s.yaml"), []byte(`rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1s}
  tiers:
    - {name: pro, match: {claim: plan, values: [pro]}, perUser: {maxTokens: 9, refillPeriod: 1s}}
trace: t.jsonl
duration: 2s
traffic:
  - {user: pat, claims: {plan: pro}, name: s, rate: 1/s}
  - {user: fay, name: s, rate: 1/s}
`))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Generate(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range tr.Events() {
		got = append(got, e.User+"@"+e.At.String()+" tier "+e.Tier+" unknown "+e.UnknownTier+" calls "+strings.Repeat("+", len(e.Calls)))
	}
	want := []string{
		"pat@0s tier pro unknown  calls +",
		"fay@0s tier  unknown  calls +",
		"h1@0s tier pro unknown  calls +",
		"h1@0s tier  unknown gold calls +",
		"pat@1s tier pro unknown  calls +",
		"fay@1s tier  unknown  calls +",
		"h2@1s tier  unknown gold calls +",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events with their tiers: -want +got:\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int64{"gold": 2}, tr.UnknownTiers); diff != "" {
		t.Errorf("calls in tiers the config does not have: -want +got:\n%s", diff)
	}
}
