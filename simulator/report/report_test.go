package report

import (
	"bytes"
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
	tr := &traffic.Traffic{Duration: time.Minute, Epoch: traffic.DefaultEpoch, Events: []traffic.Event{
		{At: 0, User: "<b>x</b>", Calls: []traffic.Call{c}, Source: 0},
		{At: 30 * time.Second, User: "h", Calls: []traffic.Call{c}, Source: traffic.SourceTrace, Recorded: "allowed"},
		{At: 59 * time.Second, User: "h", Calls: []traffic.Call{c, c}, Source: traffic.SourceTrace, Recorded: "rejected"},
	}}
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
}
