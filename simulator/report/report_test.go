package report

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/simulator/check"
	"github.com/tollgate-dev/tollgate/simulator/engine"
	"github.com/tollgate-dev/tollgate/simulator/scenario"
	"github.com/tollgate-dev/tollgate/simulator/traffic"
)

// run is a small doctored run: a user whose name needs escaping, a trace call that was
// allowed when recorded and is rejected now, and a batch of two.
func run() (*scenario.Scenario, *traffic.Traffic, *engine.Result) {
	s, err := scenario.Parse("r.yaml", []byte(`server: {namespace: default, name: r}
rateLimiting:
  shared: {maxTokens: 2, refillPeriod: 1s}
duration: 60s
traffic: [{user: "<b>x</b>", name: s, rate: 1/s}]
`))
	if err != nil {
		panic(err)
	}
	s.Trace = "t.jsonl" // as if read from a trace
	c := traffic.Call{Method: ratelimit.MethodToolsCall, Name: "s", Cost: 1}
	tr := traffic.FromEvents(time.Minute, traffic.DefaultEpoch, []traffic.Event{
		{At: 0, User: "<b>x</b>", Calls: []traffic.Call{c}, Source: 0},
		{At: 30 * time.Second, User: "h", Calls: []traffic.Call{c}, Source: traffic.SourceTrace, Recorded: "allowed"},
		{At: 59 * time.Second, User: "h", Calls: []traffic.Call{c, c}, Source: traffic.SourceTrace, Recorded: "rejected"},
	})
	shared := func(left int64) []ratelimit.BucketState {
		return []ratelimit.BucketState{{BucketID: ratelimit.BucketID{Scope: ratelimit.ScopeShared}, MaxTokens: 2, Remaining: left}}
	}
	res := &engine.Result{Outcomes: []engine.Outcome{
		{Outcome: ratelimit.OutcomeAllowed, Allowed: true, Buckets: shared(1)},
		{Outcome: ratelimit.OutcomeRejected, Buckets: shared(0)},
		{Outcome: ratelimit.OutcomeAllowed, Allowed: true, Buckets: shared(0)},
	}}
	return s, tr, res
}

func TestBuild(t *testing.T) {
	s, tr, res := run()
	checks := []check.Result{{Name: "counts", OK: true}, {Name: "fairness", OK: false}}
	got := Build(s, 9, tr, res, checks)
	if got.OK {
		t.Error("a failed check must fail the scenario")
	}
	if diff := cmp.Diff(check.Tally{Requests: 4, Admitted: 3, Rejected: 1}, got.Totals); diff != "" {
		t.Errorf("totals count calls, a batch of two as two: -want +got:\n%s", diff)
	}
	if diff := cmp.Diff(&Trace{File: "t.jsonl", Replayed: 3, NowRejected: 1, NowAdmitted: 2}, got.Trace); diff != "" {
		t.Errorf("what-if against the recorded decisions: -want +got:\n%s", diff)
	}
	if got.Timeline.BinMicros != time.Second.Microseconds() {
		t.Errorf("60 s in %d bins: got a bin of %d µs, want 1 s", Bins, got.Timeline.BinMicros)
	}
	all := got.Timeline.Series[0]
	if all.Admitted[0] != 1 || all.Rejected[30] != 1 || all.Admitted[59] != 2 {
		t.Errorf("timeline: got admitted %v rejected %v", all.Admitted, all.Rejected)
	}
	lv := got.Levels[0]
	if lv.Bucket != "shared" || lv.Remaining[0] != 1 || lv.Remaining[1] != -1 || lv.Remaining[30] != 0 {
		t.Errorf("levels: got %+v", lv)
	}
}

func TestWriters(t *testing.T) {
	s, tr, res := run()
	rep := &Report{}
	rep.Add(Build(s, 1, tr, res, nil))
	var h, txt, js bytes.Buffer
	if err := WriteHTML(&h, rep); err != nil {
		t.Fatal(err)
	}
	if err := WriteText(&txt, rep); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.String(), "<b>x</b>") || !strings.Contains(h.String(), "&lt;b&gt;x&lt;/b&gt;") {
		t.Error("a user id must be escaped in the HTML page and its SVG")
	}
	if strings.Count(h.String(), "<svg") < 3 {
		t.Errorf("want charts (calls, per user, levels): %d <svg>", strings.Count(h.String(), "<svg"))
	}
	if !strings.Contains(txt.String(), "1 scenario: 1 passed, 0 failed") {
		t.Errorf("text summary:\n%s", txt.String())
	}
	if !strings.Contains(js.String(), `"binMicros": 1000000`) {
		t.Errorf("JSON timeline bin in µs:\n%s", js.String())
	}
	if !strings.Contains(js.String(), `"keys": {
        "peak": 0,
        "final": 0,
        "expired": 0
      }`) {
		t.Errorf("JSON key statistics in lower camel case:\n%s", js.String())
	}
}

// TestDecided checks that the summary line says what decided the calls: Redis script calls
// with the real limiter, the reference model (and no Redis) with --engine model, and neither
// when no call reached the script.
func TestDecided(t *testing.T) {
	cases := map[string]struct {
		s    Scenario
		want string
	}{
		"Redis": {
			s:    Scenario{Events: 3, Totals: check.Tally{Requests: 4}, ScriptCalls: 2, Keys: engine.KeyStats{Peak: 2, Expired: 1, Final: 1}},
			want: "4 calls in 3 decisions, 2 script calls to Redis; Redis keys peak 2, expired 1, 1 at the end",
		},
		"Model": {
			s:    Scenario{Events: 3, Totals: check.Tally{Requests: 4}, Engine: EngineModel},
			want: "4 calls in 3 decisions, all by the reference model (--engine model): no Redis, no keys",
		},
		"RedisNeverAsked": {
			s:    Scenario{Events: 3, Totals: check.Tally{Requests: 4}},
			want: "4 calls in 3 decisions, none of which reached the limiter's script: Redis never asked, no keys",
		},
	}
	for name, tc := range cases {
		if diff := cmp.Diff(tc.want, tc.s.Decided()); diff != "" {
			t.Errorf("%s: -want +got:\n%s", name, diff)
		}
	}
}

// TestWriteWhatIfVacuous checks that a what-if of a trace with no call to replay says it
// compared nothing, rather than that no call would change.
func TestWriteWhatIfVacuous(t *testing.T) {
	cases := map[string]struct {
		reason string
		wi     WhatIf
		want   string
	}{
		"EmptyTrace": {
			reason: "An empty trace (or one whose every record was skipped) compares nothing.",
			wi:     WhatIf{Trace: Trace{File: "empty.jsonl", Skipped: 2}, Server: "ns/demo"},
			want: "what if empty.jsonl had run under the proposed rateLimiting of ns/demo?\n" +
				"0 calls replayed (2 records skipped): 0 now rejected that got through, 0 now admitted that were refused\n" +
				"vacuous: the trace holds no call to replay, so none could change\n",
		},
		"NothingChanged": {
			reason: "Calls were compared and none changed.",
			wi:     WhatIf{Trace: Trace{File: "t.jsonl", Replayed: 3}, Server: "ns/demo"},
			want: "what if t.jsonl had run under the proposed rateLimiting of ns/demo?\n" +
				"3 calls replayed (0 records skipped): 0 now rejected that got through, 0 now admitted that were refused\n" +
				"no call would change\n",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteWhatIf(&b, &tc.wi); err != nil {
				t.Fatalf("WriteWhatIf: %v", err)
			}
			if diff := cmp.Diff(tc.want, b.String()); diff != "" {
				t.Errorf("%s\nWriteWhatIf: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestHumanDuration(t *testing.T) {
	cases := map[string]struct {
		in   time.Duration
		want string
	}{
		"Seconds":    {in: 20 * time.Second, want: "20s"},
		"Minutes":    {in: 2 * time.Minute, want: "2m"},
		"HourHalf":   {in: 90 * time.Minute, want: "1h30m"},
		"Week":       {in: 7 * 24 * time.Hour, want: "7d"},
		"DayAndHalf": {in: 36 * time.Hour, want: "1d12h"},
		"SubSecond":  {in: 333334 * time.Microsecond, want: "333.334ms"},
		"Zero":       {in: 0, want: "0s"},
	}
	for name, tc := range cases {
		if got := HumanDuration(tc.in); got != tc.want {
			t.Errorf("%s: HumanDuration(%s) = %q, want %q", name, tc.in, got, tc.want)
		}
	}
}

// TestTokensLeft checks that levels keep their fraction: a bucket between 0 and 1 token is
// not drawn empty.
func TestTokensLeft(t *testing.T) {
	cases := map[string]struct {
		reason string
		st     ratelimit.BucketState
		want   float64
	}{
		"HalfToken": {reason: "2 per second, 750 ms from full: half a token", st: ratelimit.BucketState{MaxTokens: 2, RefillPeriod: time.Second, Reset: 750 * time.Millisecond}, want: 0.5},
		"Full":      {reason: "nothing to refill", st: ratelimit.BucketState{MaxTokens: 2, Remaining: 2, RefillPeriod: time.Second}, want: 2},
		"Empty":     {reason: "a whole period from full", st: ratelimit.BucketState{MaxTokens: 5, RefillPeriod: time.Minute, Reset: time.Minute}, want: 0},
	}
	for name, tc := range cases {
		if got := tokensLeft(tc.st); got != tc.want {
			t.Errorf("%s: %s: got %v tokens, want %v", name, tc.reason, got, tc.want)
		}
	}
}

// TestChartLabels checks the charts' labels: the x axis ends at the run's duration as people
// write it (not the bins' rounded-up span), and "full" sits above the dashed line it names.
func TestChartLabels(t *testing.T) {
	bin := 333334 * time.Microsecond // 20 s in 60 bins, rounded up to the µs
	bars := string(barChart(newSeries("all"), bin, 20*time.Second, nil, 720, 160))
	if !strings.Contains(bars, ">20s</text>") || strings.Contains(bars, "20.00004s") {
		t.Errorf("the x axis must end at 20s:\n%s", bars)
	}
	week := string(levelChart([]Levels{{Bucket: "shared", MaxTokens: 2, Remaining: []float64{0.5}}}, 168*time.Hour/Bins, 168*time.Hour, 720, 180))
	if !strings.Contains(week, ">7d</text>") {
		t.Errorf("a week is 7d on the axis:\n%s", week)
	}
	label := regexp.MustCompile(`<text x="\d+" y="(\d+)"[^>]*>full</text>`).FindStringSubmatch(week)
	line := regexp.MustCompile(`<line [^>]*y1="(\d+)"[^>]*class="full"/>`).FindStringSubmatch(week)
	if label == nil || line == nil {
		t.Fatalf("no full label or line:\n%s", week)
	}
	if ly, fy := atoi(t, label[1]), atoi(t, line[1]); ly >= fy {
		t.Errorf("the full label's baseline y=%d is not above its line y=%d", ly, fy)
	}
	if !strings.Contains(week, "0.5 of 2 tokens left") {
		t.Errorf("a fractional level keeps its fraction:\n%s", week)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTiers checks that a run with tiers reports each user's tier (several for a user who
// moved) and a row per tier, in the text report too, and that a trace's calls in a tier the
// config does not have are named and warned about.
func TestTiers(t *testing.T) {
	s, err := scenario.Parse("t.yaml", []byte(`server: {namespace: default, name: r}
rateLimiting:
  perUser: {maxTokens: 2, refillPeriod: 1s}
  tiers: [{name: pro, match: {claim: plan, values: [pro]}, perUser: {maxTokens: 9, refillPeriod: 1s}}]
duration: 60s
traffic: [{user: pat, claims: {plan: pro}, name: s, rate: 1/s}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s.Trace = "t.jsonl" // as if read from a trace
	c := traffic.Call{Method: ratelimit.MethodToolsCall, Name: "s", Cost: 1}
	tr := traffic.FromEvents(time.Minute, traffic.DefaultEpoch, []traffic.Event{
		{At: 0, User: "pat", Tier: "pro", Calls: []traffic.Call{c}},
		{At: 0, User: "uma", Calls: []traffic.Call{c}},
		{At: time.Second, User: "uma", Tier: "pro", Calls: []traffic.Call{c, c}},
		{At: 2 * time.Second, User: "h", UnknownTier: "gold", Calls: []traffic.Call{c}, Source: traffic.SourceTrace, Recorded: "allowed"},
	})
	tr.UnknownTiers = map[string]int64{"gold": 1}
	allowed := engine.Outcome{Outcome: ratelimit.OutcomeAllowed, Allowed: true}
	got := Build(s, 1, tr, &engine.Result{Outcomes: []engine.Outcome{allowed, allowed, allowed, {Outcome: ratelimit.OutcomeRejected}}}, nil)
	users := map[string]string{}
	for _, u := range got.Users {
		users[u.User] = u.Tier
	}
	if diff := cmp.Diff(map[string]string{"pat": "pro", "uma": "-, pro", "h": "gold (not configured)"}, users); diff != "" {
		t.Errorf("each user's tiers: -want +got:\n%s", diff)
	}
	wantTiers := []TierRow{
		{Tier: "-", Users: 1, Tally: check.Tally{Requests: 1, Admitted: 1}},
		{Tier: "gold (not configured)", Users: 1, Tally: check.Tally{Requests: 1, Rejected: 1}},
		{Tier: "pro", Users: 2, Tally: check.Tally{Requests: 3, Admitted: 3}},
	}
	if diff := cmp.Diff(wantTiers, got.Tiers); diff != "" {
		t.Errorf("tier rows: -want +got:\n%s", diff)
	}
	var b bytes.Buffer
	if err := WriteText(&b, &Report{Scenarios: []*Scenario{got}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"warning: 1 calls recorded in a tier the config does not have (gold 1): decided with the default buckets",
		"USER TIER                      CALLS",
		"uma  -, pro                        3",
		"TIER                      USERS     CALLS",
		"pro                           2         3",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the text report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := WriteHTML(&b, &Report{Scenarios: []*Scenario{got}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<th>user</th><th>tier</th>",
		"<td>uma</td><td>-, pro</td>",
		"<h3>Tiers</h3>",
		"<td>pro</td><td>2</td><td>3</td>",
		"Warning: 1 calls recorded in a tier the config does not have",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
}

// TestOutageShown: a run with outages says when Redis was down and what the failure policy
// made of the calls, in the text and as a band on the timeline; a run without says nothing.
func TestOutageShown(t *testing.T) {
	outages := []Outage{{From: "10s", To: "20s", Start: 10 * time.Second, End: 20 * time.Second}}
	cases := map[string]struct {
		reason string
		s      Scenario
		want   string
	}{
		"None": {reason: "no outage, no line", s: Scenario{}, want: ""},
		"Allow": {
			reason: "the calls let through are counted",
			s:      Scenario{Outages: outages, FailurePolicy: "Allow", Totals: check.Tally{FailOpen: 200}},
			want:   "Redis down [+10s, +20s) (failurePolicy Allow): 200 fail_open",
		},
		"Local": {
			reason: "the local buckets' admissions and refusals both",
			s:      Scenario{Outages: outages, FailurePolicy: "Local", Totals: check.Tally{DegradedAllowed: 108, DegradedRejected: 92}},
			want:   "Redis down [+10s, +20s) (failurePolicy Local): 108 degraded_allowed, 92 degraded_rejected",
		},
		"Unused": {
			reason: "an outage nobody called in is said to be so",
			s:      Scenario{Outages: outages, FailurePolicy: "Deny"},
			want:   "Redis down [+10s, +20s) (failurePolicy Deny): no call needed it",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.s.OutageLine()); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
	bars := string(barChart(newSeries("all"), time.Second/2, 30*time.Second, outages, 720, 160))
	if !strings.Contains(bars, "<title>Redis down +10s to +20s</title>") {
		t.Errorf("the timeline shades the outage:\n%s", bars)
	}
}
