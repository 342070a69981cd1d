package traffic

import (
	"errors"
	"os"
	"path/filepath"
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

// arrivals lists (user, time) of the events, for compact expectations.
func arrivals(events []Event) []string {
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
			if diff := cmp.Diff(tc.want, arrivals(tr.Events)); diff != "" {
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
	if diff := cmp.Diff(arrivals(one.Events), arrivals(again.Events)); diff != "" {
		t.Errorf("the same seed must give the same calls: -first +second:\n%s", diff)
	}
	other, err := Generate(s, 2)
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Equal(arrivals(one.Events), arrivals(other.Events)) {
		t.Error("another seed gave the same calls")
	}
	count := map[string]int{}
	for i, e := range one.Events {
		count[e.User]++
		if i > 0 && e.At < one.Events[i-1].At {
			t.Fatalf("events out of order at %d: %s after %s", i, e.At, one.Events[i-1].At)
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
// holds user hashes as the proxy writes them (ratelimit.HashUser with the default key).
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
