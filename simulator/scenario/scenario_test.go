package scenario

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// valid is the smallest valid scenario; cases append to it or replace it.
const valid = `name: t
server: {namespace: default, name: x}
rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1s}
duration: 3s
traffic:
  - user: ann
    name: search
    rate: 2/s
`

func TestParseErrors(t *testing.T) {
	cases := map[string]struct {
		reason string
		yaml   string
		want   Error // File is filled in
	}{
		"UnknownTopLevelField": {
			reason: "strict: a misspelt field is an error, not silently ignored",
			yaml:   valid + "expects: {}\n",
			want:   Error{Line: 10, Column: 1, Field: "expects", Msg: "unknown field (known here: description, duration, expect, faults, name, rateLimiting, replicas, seed, server, trace, traffic)"},
		},
		"UnknownFieldInAPIType": {
			reason: "the api type is decoded as strictly as the scenario's own fields",
			yaml: `server: {namespace: default, name: x}
rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1s, burst: 5}
duration: 3s
traffic: [{user: a, name: s, rate: 1/s}]
`,
			want: Error{Line: 3, Column: 45, Field: "rateLimiting.perUser.burst", Msg: "unknown field (known here: maxTokens, refillPeriod)"},
		},
		"WrongType": {
			reason: "a type error names the field and what was found",
			yaml:   valid[:len(valid)-len("    rate: 2/s\n")] + "    rate: 2/s\n    cost: lots\n",
			want:   Error{Line: 10, Column: 11, Field: "traffic[0].cost", Msg: `want an integer, got the string "lots"`},
		},
		"BadRate": {
			reason: "rates are parsed where they are written",
			yaml:   valid[:len(valid)-len("    rate: 2/s\n")] + "    rate: fast\n",
			want:   Error{Line: 9, Column: 11, Field: "traffic[0].rate", Msg: `"fast": want a rate like 10/s, 3/m, 100/h or 20/30s`},
		},
		"BadRefillPeriod": {
			reason: "metav1.Duration gets the JSON it expects, and its error is placed",
			yaml:   "rateLimiting:\n  perUser: {maxTokens: 3, refillPeriod: soon}\n",
			want:   Error{Line: 2, Column: 41, Field: "rateLimiting.perUser.refillPeriod", Msg: `time: invalid duration "soon"`},
		},
		"DuplicateKey": {
			reason: "a repeated key would silently override the first",
			yaml:   valid + "duration: 4s\n",
			want:   Error{Line: 10, Column: 1, Field: "duration", Msg: "set more than once"},
		},
		"InvalidConfig": {
			reason: "the limiter's own validation runs at load time and points at rateLimiting",
			yaml: `server: {namespace: default, name: x}
rateLimiting:
  tools: [{name: search, perUser: {maxTokens: 0, refillPeriod: 1s}}]
duration: 3s
traffic: [{user: a, name: s, rate: 1/s}]
`,
			want: Error{Line: 3, Column: 3, Field: "rateLimiting", Msg: `rate limiter for default/x: tool "search" perUser bucket: maxTokens must be >= 1`},
		},
		"TwoUserKinds": {
			reason: "a generator sends as one user, a population or anonymously",
			yaml:   valid + "  - {user: a, users: {count: 2}, name: s, rate: 1/s}\n",
			want:   Error{Line: 10, Column: 5, Field: "traffic[1]", Msg: "set exactly one of user, users and anonymous"},
		},
		"EndAfterDuration": {
			reason: "a generator cannot outlive the scenario",
			yaml:   valid + "  - {user: a, name: s, rate: 1/s, end: 5s}\n",
			want:   Error{Line: 10, Column: 40, Field: "traffic[1].end", Msg: "5s is after the scenario's duration 3s"},
		},
		"FromWithoutRamp": {
			reason: "only a ramp has a starting rate",
			yaml:   valid + "  - {user: a, name: s, rate: 1/s, from: 0/s}\n",
			want:   Error{Line: 10, Column: 41, Field: "traffic[1].from", Msg: "only a ramp has a starting rate"},
		},
		"IsolationWithoutPerUser": {
			reason: "per-user isolation with no per-user bucket would be a checker that cannot fail",
			yaml: `server: {namespace: default, name: x}
rateLimiting:
  shared: {maxTokens: 3, refillPeriod: 1s}
duration: 3s
traffic: [{user: a, name: s, rate: 1/s}]
expect:
  isolation: true
`,
			want: Error{Line: 7, Column: 14, Field: "expect.isolation", Msg: "rateLimiting has no perUser bucket, so per-user isolation has nothing to compare (use scope: all, or add a perUser bucket)"},
		},
		"UnknownUserInExpect": {
			reason: "naming a user who sends nothing is a typo, not a vacuous pass",
			yaml:   valid + "expect:\n  noStarvation: {min: 1, window: 1s, users: [bob]}\n",
			want:   Error{Line: 11, Column: 46, Field: "expect.noStarvation.users[0]", Msg: `user "bob" sends no traffic in this scenario`},
		},
		"MinAboveMax": {
			reason: "bounds that nothing satisfies are a mistake in the scenario",
			yaml:   valid + "expect:\n  counts: [{user: ann, admitted: {min: 5, max: 2}}]\n",
			want:   Error{Line: 11, Column: 34, Field: "expect.counts[0].admitted", Msg: "min 5 is above max 2"},
		},
		"ReplicasZero": {
			reason: "replicas: 0 written out is a mistake (no replica would decide), not the default of 1",
			yaml:   valid + "replicas: 0\n",
			want:   Error{Line: 10, Column: 11, Field: "replicas", Msg: "must be between 1 and 64 (leave it out for 1)"},
		},
		"TraceIsFolder": {
			reason: "a trace path that names a folder is placed at the trace field",
			yaml:   valid + "trace: .\n",
			want:   Error{Line: 10, Column: 8, Field: "trace", Msg: ". is a folder: want a decision log (JSON lines)"},
		},
		"EveryPropertyOff": {
			reason: "a scenario that checks nothing would always pass",
			yaml:   valid + "expect:\n  rejectionChangesNoBucket: false\n  tokenBucketEnvelope: false\n  referenceModel: false\n  denyCacheExact: false\n",
			want:   Error{Line: 11, Column: 3, Field: "expect", Msg: "every property is off: the scenario would check nothing (turn one back on, or add counts)"},
		},
		"FaultBackwards": {
			reason: "an outage ends after it starts",
			yaml:   valid + "faults: [{redisDown: {from: 2s, to: 1s}}]\n",
			want:   Error{Line: 10, Column: 37, Field: "faults[0].redisDown.to", Msg: "must be after from (2s)"},
		},
		"FaultWithoutEnd": {
			reason: "an outage without its end would last for ever",
			yaml:   valid + "faults: [{redisDown: {from: 2s}}]\n",
			want:   Error{Line: 10, Column: 22, Field: "faults[0].redisDown.to", Msg: "required: when Redis answers again"},
		},
		"FaultAfterDuration": {
			reason: "an outage past the run's end is a mistake",
			yaml:   valid + "faults: [{redisDown: {from: 1s, to: 4s}}]\n",
			want:   Error{Line: 10, Column: 37, Field: "faults[0].redisDown.to", Msg: "4s is after the scenario's duration 3s"},
		},
		"FaultEmpty": {
			reason: "a fault names its kind",
			yaml:   valid + "faults: [{}]\n",
			want:   Error{Line: 10, Column: 10, Field: "faults[0]", Msg: "set redisDown: {from, to}"},
		},
		"FaultUnknownKind": {
			reason: "strict: a fault the simulator does not know is an error",
			yaml:   valid + "faults: [{redisSlow: {from: 1s, to: 2s}}]\n",
			want:   Error{Line: 10, Column: 11, Field: "faults[0].redisSlow", Msg: "unknown field (known here: redisDown)"},
		},
		"FaultsOverlap": {
			reason: "two outages that overlap are one outage",
			yaml:   valid + "faults: [{redisDown: {from: 2s, to: 3s}}, {redisDown: {from: 0s, to: 2500ms}}]\n",
			want:   Error{Line: 10, Column: 9, Field: "faults", Msg: "the outages [0s, 2.5s) and [2s, 3s) overlap: write them as one"},
		},
		"OutageEnvelopeWithoutLocal": {
			reason: "outageEnvelope judges local buckets: without failurePolicy Local there are none",
			yaml:   valid + "faults: [{redisDown: {from: 1s, to: 2s}}]\nexpect: {outageEnvelope: true}\n",
			want:   Error{Line: 11, Column: 26, Field: "expect.outageEnvelope", Msg: "needs faults and rateLimiting.failurePolicy Local: only then do local buckets decide"},
		},
		"FormerNameBeside": {
			reason: "the property's former name and its name are one setting",
			yaml:   valid + "expect:\n  rejectionChangesNoBucket: true\n  perUserRejectionNeverDrainsShared: false\n",
			want:   Error{Line: 12, Column: 38, Field: "expect.perUserRejectionNeverDrainsShared", Msg: "the former name of rejectionChangesNoBucket: set only one of them"},
		},
		"MissingRateLimiting": {
			reason: "the config under test is required",
			yaml:   "duration: 3s\ntraffic: [{user: a, name: s, rate: 1/s}]\n",
			want:   Error{Field: "rateLimiting", Msg: "required: the MCPServer's spec.rateLimiting block to simulate"},
		},
		"SyntaxError": {
			reason: "a YAML syntax error keeps its line",
			yaml:   "name: [unclosed\n",
			want:   Error{Line: 1, Column: 1, Msg: "did not find expected ',' or ']'"},
		},
		"TwoDocuments": {
			reason: "one scenario per file",
			yaml:   valid + "---\nname: other\n",
			want:   Error{Line: 10, Column: 1, Msg: "one scenario per file: a second YAML document starts here"},
		},
		"Empty": {
			reason: "an empty file says what a scenario needs",
			yaml:   "",
			want:   Error{Msg: "empty file: a scenario needs at least server, rateLimiting and traffic"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(tc.yaml))
			var got *Error
			if !errors.As(err, &got) {
				t.Fatalf("%s\nParse: got error %v, want a *scenario.Error", tc.reason, err)
			}
			tc.want.File = "s.yaml"
			if diff := cmp.Diff(&tc.want, got); diff != "" {
				t.Errorf("%s\nerror: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	e := &Error{File: "a.yaml", Line: 3, Column: 7, Field: "traffic[0].rate", Msg: "bad"}
	if diff := cmp.Diff("a.yaml:3:7: traffic[0].rate: bad", e.Error()); diff != "" {
		t.Errorf("file, line, column and field lead the message: -want +got:\n%s", diff)
	}
}

func TestParseDefaultsAndValues(t *testing.T) {
	yaml := `server: {namespace: ns}
rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1m30s}
duration: 2d
traffic:
  - users: {count: 3}
    name: search
    rate: 20/30s
    pattern: ramp
    from: 1/m
  - anonymous: true
    method: resources/read
    name: file:///a
    rate: 1/h
    end: 1h
    jitter: 10ms
expect:
  tokenBucketEnvelope: false
  counts:
    - {user: user-0, admitted: 5, rejected: {max: 2}}
`
	got, err := Parse("dir/ramp.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	five, two := int64(5), int64(2)
	no := false
	want := &Scenario{
		Name:   "ramp",
		Server: Server{Namespace: "ns", Name: "sim"},
		RateLimiting: &v1alpha1.RateLimitConfig{
			PerUser: &v1alpha1.RateLimitBucket{MaxTokens: 3, RefillPeriod: metav1.Duration{Duration: 90 * time.Second}},
		},
		Replicas: 1,
		Duration: Duration{48 * time.Hour},
		Traffic: []Generator{
			{Users: &Population{Count: 3, Prefix: "user-"}, Method: "tools/call", Name: "search", Rate: Rate{20, 30 * time.Second},
				Pattern: PatternRamp, From: &Rate{1, time.Minute}, Cost: 1, Batch: 1},
			{Anonymous: true, Method: "resources/read", Name: "file:///a", Rate: Rate{1, time.Hour}, Pattern: PatternConstant,
				End: &Duration{time.Hour}, Cost: 1, Batch: 1, Jitter: Duration{10 * time.Millisecond}},
		},
		Expect: Expect{
			TokenBucketEnvelope: &no,
			Counts:              []Count{{User: "user-0", Admitted: &Bounds{Min: &five, Max: &five}, Rejected: &Bounds{Max: &two}}},
		},
		File: "dir/ramp.yaml",
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Scenario{})); diff != "" {
		t.Errorf("decoded scenario with defaults: -want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]string{"user-0", "user-1", "user-2"}, got.Traffic[0].GeneratorUsers()); diff != "" {
		t.Errorf("population names: -want +got:\n%s", diff)
	}
}

func TestRate(t *testing.T) {
	cases := map[string]struct {
		reason string
		in     string
		want   Rate
		err    bool
	}{
		"PerSecond":   {reason: "a unit alone means one of it", in: "10/s", want: Rate{10, time.Second}},
		"PerDuration": {reason: "any Go duration", in: "20/30s", want: Rate{20, 30 * time.Second}},
		"PerDay":      {reason: "d is a day", in: "100/d", want: Rate{100, 24 * time.Hour}},
		"Zero":        {reason: "zero parses (a ramp may start there)", in: "0/s", want: Rate{0, time.Second}},
		"NoSlash":     {reason: "a bare number has no period", in: "10", err: true},
		"Negative":    {reason: "no negative rates", in: "-1/s", err: true},
		"Fraction":    {reason: "counts are whole: write 1/2s, not 0.5/s", in: "0.5/s", err: true},
		"TinyPeriod":  {reason: "virtual time has microseconds", in: "1/1ns", err: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var got Rate
			err := got.UnmarshalText([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("%s\nUnmarshalText(%q): error %v, want error %v", tc.reason, tc.in, err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); !tc.err && diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestPerUserOnly(t *testing.T) {
	b := func(n int32) *v1alpha1.RateLimitBucket {
		return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: time.Second}}
	}
	cfg := &v1alpha1.RateLimitConfig{
		Shared: b(100), PerUser: b(10),
		Tools: []v1alpha1.ToolRateLimitConfig{
			{Name: "both", Shared: b(5), PerUser: b(2)},
			{Name: "shared-only", Shared: b(5)},
			{Name: "weighted", Shared: b(50), Cost: 5},
		},
	}
	want := &v1alpha1.RateLimitConfig{
		PerUser: b(10),
		Tools: []v1alpha1.ToolRateLimitConfig{
			{Name: "both", PerUser: b(2)},
			{Name: "weighted", Shared: unbounded, Cost: 5},
		},
	}
	if diff := cmp.Diff(want, PerUserOnly(cfg)); diff != "" {
		t.Errorf("shared buckets go, per-user buckets and weights stay: -want +got:\n%s", diff)
	}
	tiers := []v1alpha1.RateLimitTier{{Name: "staff", Match: v1alpha1.TierMatch{Header: "X-Staff", Values: []string{"y"}}, Unlimited: true}}
	if diff := cmp.Diff(&v1alpha1.RateLimitConfig{Tiers: tiers}, PerUserOnly(&v1alpha1.RateLimitConfig{Shared: b(1), Tiers: tiers})); diff != "" {
		t.Errorf("tiers are per-user buckets and stay: -want +got:\n%s", diff)
	}
	if got := PerUserOnly(&v1alpha1.RateLimitConfig{Shared: b(1)}); got != nil {
		t.Errorf("no per-user bucket: got %+v, want nil", got)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"b.yaml", "a.yml", "sub/c.yaml", "traces/t.jsonl", "README.md"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Files([]string{dir, filepath.Join(dir, "README.md")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a.yml"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "sub/c.yaml"), filepath.Join(dir, "README.md")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("folders expand to their YAML files, sorted; files stay: -want +got:\n%s", diff)
	}
	if _, err := Files([]string{filepath.Join(dir, "traces")}); err == nil {
		t.Error("a folder without scenarios: want an error")
	}
}

func TestParseServerError(t *testing.T) {
	_, err := Parse("s.yaml", []byte(`server: {namespace: Not_A_Label, name: x}
rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1s}
duration: 3s
traffic: [{user: a, name: s, rate: 1/s}]
`))
	var got *Error
	if !errors.As(err, &got) || got.Field != "server" || got.Line != 1 {
		t.Errorf("an invalid namespace: got %v, want an error at server, line 1", err)
	}
}

// TestFormerPropertyName checks that perUserRejectionNeverDrainsShared, the former name of
// rejectionChangesNoBucket, still sets it.
func TestFormerPropertyName(t *testing.T) {
	s, err := Parse("s.yaml", []byte(valid+"expect:\n  perUserRejectionNeverDrainsShared: false\n  counts: [{user: ann, requests: 6}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if On(s.Expect.RejectionChangesNoBucket) || s.Expect.PerUserRejectionNeverDrainsShared != nil {
		t.Errorf("got rejectionChangesNoBucket %v, former name %v; want false and moved", s.Expect.RejectionChangesNoBucket, s.Expect.PerUserRejectionNeverDrainsShared)
	}
}

// tiered is a scenario with tiers by claim and by header; cases append a generator's
// identity to its single user.
const tiered = `server: {namespace: default, name: x}
rateLimiting:
  perUser: {maxTokens: 3, refillPeriod: 1s}
  tiers:
    - {name: pro, match: {claim: plan, values: [pro]}, perUser: {maxTokens: 9, refillPeriod: 1s}}
    - {name: sre, match: {claim: groups, values: [sre]}, unlimited: true}
    - {name: gold, match: {header: X-Plan, values: [gold]}, perUser: {maxTokens: 20, refillPeriod: 1s}}
duration: 3s
traffic:
  - user: ann
    name: search
    rate: 2/s
`

func TestIdentityErrors(t *testing.T) {
	cases := map[string]struct {
		reason string
		yaml   string
		want   Error // File is filled in
	}{
		"ClaimNumber": {
			reason: "a claim is a string or a list of strings: YAML's integer is refused, not turned into a string",
			yaml:   tiered + "    claims: {plan: 1}\n",
			want:   Error{Line: 13, Column: 20, Field: "traffic[0].claims.plan", Msg: "want a string or a list of strings, got the integer 1 (quote it to make it a string)"},
		},
		"ClaimListOfMappings": {
			reason: "every item of a list claim is a string; the item is named",
			yaml:   tiered + "    claims: {groups: [sre, {a: b}]}\n",
			want:   Error{Line: 13, Column: 28, Field: "traffic[0].claims.groups[1]", Msg: "want a string or a list of strings, got a mapping in the list (quote it to make it a string)"},
		},
		"ClaimsNotAMapping": {
			reason: "claims are a mapping of names",
			yaml:   tiered + "    claims: [plan, pro]\n",
			want:   Error{Line: 13, Column: 13, Field: "traffic[0].claims", Msg: "want a mapping, got a list"},
		},
		"ClaimTwice": {
			reason: "a repeated claim is an error, as a repeated field is",
			yaml:   tiered + "    claims: {plan: pro, plan: free}\n",
			want:   Error{Line: 13, Column: 25, Field: "traffic[0].claims.plan", Msg: "set more than once"},
		},
		"HeaderList": {
			reason: "a header is sent once: one value",
			yaml:   tiered + "    headers: {X-Plan: [gold, free]}\n",
			want:   Error{Line: 13, Column: 23, Field: "traffic[0].headers.X-Plan", Msg: "want a string, got a list (quote it to make it one)"},
		},
		"HeaderTwiceInAnotherCase": {
			reason: "header names ignore case: two spellings are the header sent twice",
			yaml:   tiered + "    headers: {X-Plan: gold, x-plan: free}\n",
			want:   Error{Line: 13, Column: 37, Field: "traffic[0].headers.x-plan", Msg: "the same header as X-Plan (header names ignore case): a header is sent once"},
		},
		"HeaderName": {
			reason: "a header name is an HTTP token",
			yaml:   tiered + "    headers: {\"X Plan\": gold}\n",
			want:   Error{Line: 13, Column: 25, Field: "traffic[0].headers.X Plan", Msg: `"X Plan" is not a header name (letters, digits and !#$%&'*+.^_|~-)`},
		},
		"AnonymousClaims": {
			reason: "an anonymous caller has no identity to carry attributes",
			yaml:   tiered + "  - {anonymous: true, name: s, rate: 1/s, claims: {plan: pro}}\n",
			want:   Error{Line: 13, Column: 51, Field: "traffic[1].claims", Msg: "an anonymous caller has no identity to carry claims or headers (use user or users)"},
		},
		"TierEnvelopeWithoutTiers": {
			reason: "asking for the tier property without tiers is a mistake",
			yaml:   valid + "expect: {tierEnvelope: true}\n",
			want:   Error{Line: 10, Column: 24, Field: "expect.tierEnvelope", Msg: "rateLimiting has no tiers, so there is no tier envelope to check"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(tc.yaml))
			var got *Error
			if !errors.As(err, &got) {
				t.Fatalf("%s\nParse: got error %v, want a *scenario.Error", tc.reason, err)
			}
			tc.want.File = "s.yaml"
			if diff := cmp.Diff(&tc.want, got); diff != "" {
				t.Errorf("%s\nerror: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestTierResolution shows each generator's users resolved to a tier by
// ratelimit.ResolveTier, from claims (a string, or a list holding a value) and headers
// (any case of the name), first match first.
func TestTierResolution(t *testing.T) {
	cases := map[string]struct {
		reason   string
		identity string
		want     string
	}{
		"None":        {reason: "no attributes: no tier", want: ""},
		"StringClaim": {reason: "a string claim that is one of the values", identity: "    claims: {plan: pro}\n", want: "pro"},
		"ListClaim":   {reason: "a list claim holding one of the values", identity: "    claims: {groups: [dev, sre]}\n", want: "sre"},
		"OneItemList": {reason: "a list of one is still a list, and matches", identity: "    claims: {groups: [sre]}\n", want: "sre"},
		"FirstMatch":  {reason: "the first tier that matches wins", identity: "    claims: {plan: pro, groups: [sre]}\n", want: "pro"},
		"Header":      {reason: "a header tier, the name in any case", identity: "    headers: {x-plan: gold}\n", want: "gold"},
		"NoMatch":     {reason: "values compare exactly", identity: "    claims: {plan: Pro}\n    headers: {X-Plan: Gold}\n", want: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Parse("s.yaml", []byte(tiered+tc.identity))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, s.Traffic[0].Tier); diff != "" {
				t.Errorf("%s\ntier: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestClaimJSON(t *testing.T) {
	cases := map[string]struct {
		claim Claim
		want  string
	}{
		"String":    {claim: Claim{Values: []string{"pro"}}, want: `"pro"`},
		"List":      {claim: Claim{Values: []string{"a", "b"}, List: true}, want: `["a","b"]`},
		"ListOfOne": {claim: Claim{Values: []string{"a"}, List: true}, want: `["a"]`},
		"EmptyList": {claim: Claim{List: true}, want: `[]`},
	}
	for name, tc := range cases {
		if diff := cmp.Diff(tc.want, string(tc.claim.JSON())); diff != "" {
			t.Errorf("%s: -want +got:\n%s", name, diff)
		}
	}
}
