package enforce

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testoidc"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// tierCall is one request of a tier test: its headers exactly as sent (a header may repeat)
// and its body.
type tierCall struct {
	header http.Header
	body   string
}

// tierResult is what a tier test checks of a response.
type tierResult struct {
	Status    int
	Forwarded bool
	Policy    string // RateLimit-Policy: the buckets, named with their tier, that applied
	Limit     string // the error's data.limit: the bucket that rejected
	Message   string // the error's message
}

func (f *fixture) tierDo(t *testing.T, c tierCall) tierResult {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(c.body))
	r.RemoteAddr = "127.0.0.1:5555"
	for k, vs := range c.header {
		r.Header[k] = vs // as sent: repeated, or not canonical (X_Plan)
	}
	before := f.upstream.Load()
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	res := tierResult{Status: w.Code, Forwarded: f.upstream.Load() > before, Policy: w.Header().Get("RateLimit-Policy")}
	if !res.Forwarded {
		var body struct {
			Error struct {
				Message string `json:"message"`
				Data    any    `json:"data"`
			} `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("response body is not a JSON-RPC error: %q", w.Body.String())
		}
		res.Message = body.Error.Message
		if d, ok := body.Error.Data.(map[string]any); ok {
			res.Limit, _ = d["limit"].(string)
		}
	}
	return res
}

// tierRecord is what a tier test checks of a decision-log line.
type tierRecord struct {
	Tier     string
	Decision ratelimit.Outcome
	Limit    string
}

func (f *fixture) tierRecords(t *testing.T) []tierRecord {
	t.Helper()
	var recs []tierRecord
	for line := range strings.SplitSeq(strings.TrimSpace(f.log.String()), "\n") {
		if line == "" {
			continue
		}
		var r ratelimit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decision log line %q: %v", line, err)
		}
		recs = append(recs, tierRecord{Tier: r.Tier, Decision: r.Decision, Limit: r.Limit})
	}
	return recs
}

// tierConfig: a default envelope of 1 call a minute per user (search: 1 as well), a gold tier
// (header X-Plan or claim plan) of 3 a minute with search at 2, and an unlimited staff tier
// (array claim groups, or X-Plan: staff). Shared 100 applies to every tier.
func tierConfig(byClaim bool) *v1alpha1.RateLimitConfig {
	gold := v1alpha1.TierMatch{Header: "X-Plan", Values: []string{"gold"}}
	staff := v1alpha1.TierMatch{Header: "X-Plan", Values: []string{"staff"}}
	if byClaim {
		gold = v1alpha1.TierMatch{Claim: "plan", Values: []string{"gold"}}
		staff = v1alpha1.TierMatch{Claim: "groups", Values: []string{"staff"}}
	}
	return &v1alpha1.RateLimitConfig{
		Shared:  bucket(100, time.Minute),
		PerUser: bucket(1, time.Minute),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: bucket(1, time.Minute)}},
		Tiers: []v1alpha1.RateLimitTier{
			{Name: "gold", Match: gold, PerUser: bucket(3, time.Minute),
				Tools: []v1alpha1.TierToolLimit{{Name: "search", PerUser: *bucket(2, time.Minute)}}},
			{Name: "staff", Match: staff, Unlimited: true},
		},
	}
}

// Policies as the RateLimit-Policy header names them.
const (
	policyDefault    = `"shared";q=100;w=60, "user";q=1;w=60`
	policyGold       = `"shared";q=100;w=60, "user@gold";q=3;w=60`
	policyGoldSearch = `"shared";q=100;w=60, "user@gold";q=3;w=60, "tool:search:user@gold";q=2;w=60`
	policyStaff      = `"shared";q=100;w=60`
)

func TestTiers(t *testing.T) {
	issuer := testoidc.Start(t)
	bearer := func(claims map[string]any) http.Header {
		return http.Header{"Authorization": {"Bearer " + issuer.Token(t, claims)}}
	}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	repeat := func(c tierCall, n int) []tierCall {
		out := make([]tierCall, n)
		for i := range out {
			out[i] = c
		}
		return out
	}
	echo, search := toolCall("1", "echo"), toolCall("1", "search")
	ok := func(policy string) tierResult { return tierResult{Status: 200, Forwarded: true, Policy: policy} }
	limited := func(policy, limit string) tierResult {
		return tierResult{Status: 429, Policy: policy, Limit: limit, Message: "Rate limit exceeded"}
	}
	refused := tierResult{Status: 400, Message: "Invalid Request"}
	allowed := func(tier string) tierRecord { return tierRecord{Tier: tier, Decision: ratelimit.OutcomeAllowed} }
	rejected := func(tier, limit string) tierRecord {
		return tierRecord{Tier: tier, Decision: ratelimit.OutcomeRejected, Limit: limit}
	}

	cases := map[string]struct {
		reason  string
		oidc    bool // claim tiers and OIDC authentication; else header tiers and header authentication
		calls   []tierCall
		want    []tierResult
		records []tierRecord // the decision log
	}{
		"HeaderDefault": {
			reason:  "A caller the gateway gives no tier header gets the default envelope.",
			calls:   repeat(tierCall{hdr("X-User", "alice"), echo}, 2),
			want:    []tierResult{ok(policyDefault), limited(policyDefault, "user")},
			records: []tierRecord{allowed(""), rejected("", "user")},
		},
		"HeaderGold": {
			reason:  "X-Plan: gold from the gateway replaces the per-user bucket with the tier's, and no more is admitted.",
			calls:   repeat(tierCall{hdr("X-User", "alice", "X-Plan", "gold"), echo}, 4),
			want:    []tierResult{ok(policyGold), ok(policyGold), ok(policyGold), limited(policyGold, "user@gold")},
			records: []tierRecord{allowed("gold"), allowed("gold"), allowed("gold"), rejected("gold", "user@gold")},
		},
		"HeaderGoldTool": {
			reason:  "The tier's tool bucket replaces the tool's default per-user bucket.",
			calls:   repeat(tierCall{hdr("X-User", "alice", "X-Plan", "gold"), search}, 3),
			want:    []tierResult{ok(policyGoldSearch), ok(policyGoldSearch), limited(policyGoldSearch, "tool:search:user@gold")},
			records: []tierRecord{allowed("gold"), allowed("gold"), rejected("gold", "tool:search:user@gold")},
		},
		"HeaderUnlimited": {
			reason:  "An unlimited tier meets only the shared bucket.",
			calls:   repeat(tierCall{hdr("X-User", "alice", "X-Plan", "staff"), echo}, 4),
			want:    []tierResult{ok(policyStaff), ok(policyStaff), ok(policyStaff), ok(policyStaff)},
			records: []tierRecord{allowed("staff"), allowed("staff"), allowed("staff"), allowed("staff")},
		},
		"HeaderUnlistedValue": {
			reason:  "A value no tier lists is the default envelope.",
			calls:   repeat(tierCall{hdr("X-User", "alice", "X-Plan", "platinum"), echo}, 2),
			want:    []tierResult{ok(policyDefault), limited(policyDefault, "user")},
			records: []tierRecord{allowed(""), rejected("", "user")},
		},
		"BatchOneTier": {
			reason: "Every call of a batch is decided in its caller's tier: 3 echo calls fit gold's 3, the next call does not.",
			calls: []tierCall{
				{hdr("X-User", "alice", "X-Plan", "gold"), "[" + toolCall("1", "echo") + "," + toolCall("2", "echo") + "," + toolCall("3", "echo") + "]"},
				{hdr("X-User", "alice", "X-Plan", "gold"), echo},
			},
			want:    []tierResult{ok(policyGold), limited(policyGold, "user@gold")},
			records: []tierRecord{allowed("gold"), allowed("gold"), allowed("gold"), rejected("gold", "user@gold")},
		},
		"HeaderRepeated": {
			reason: "A tier header sent twice is refused, even when both agree: never guessed at.",
			calls: []tierCall{
				{hdr("X-User", "alice", "X-Plan", "gold", "X-Plan", "gold"), echo},
				{hdr("X-User", "alice", "X-Plan", "free", "X-Plan", "staff"), echo},
			},
			want: []tierResult{refused, refused},
		},
		"HeaderRepeatedUnlimitedMethod": {
			reason: "The header rules hold for every request, limited or not.",
			calls:  []tierCall{{hdr("X-User", "alice", "X-Plan", "gold", "X-Plan", "gold"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`}},
			want:   []tierResult{refused},
		},
		"ConnectionNamesTierHeader": {
			reason: "A Connection header naming the tier header would strip it on the way: the upstream would not see what chose the tier.",
			calls: []tierCall{
				{hdr("X-User", "alice", "X-Plan", "staff", "Connection", "X-Plan"), echo},
				{hdr("X-User", "alice", "X-Plan", "staff", "Connection", "keep-alive, x_plan"), echo},
			},
			want: []tierResult{refused, refused},
		},
		"LookAlike": {
			reason: "X_Plan beside X-Plan: servers that fold '_' into '-' would read another tier.",
			calls:  []tierCall{{hdr("X-User", "alice", "X-Plan", "gold", "X_Plan", "staff"), echo}},
			want:   []tierResult{refused},
		},
		"TierHeaderWithoutIdentity": {
			reason:  "A tier header without an identity is anonymous, and with tiers any limited call needs an identity: 401.",
			calls:   []tierCall{{hdr("X-Plan", "staff"), echo}},
			want:    []tierResult{{Status: 401, Message: "Unauthorized"}},
			records: []tierRecord{{Decision: ratelimit.OutcomeUnidentified}},
		},
		"ClaimString": {
			reason:  "A string claim plan: gold chooses the gold tier.",
			oidc:    true,
			calls:   repeat(tierCall{bearer(map[string]any{"sub": "alice", "plan": "gold"}), echo}, 4),
			want:    []tierResult{ok(policyGold), ok(policyGold), ok(policyGold), limited(policyGold, "user@gold")},
			records: []tierRecord{allowed("gold"), allowed("gold"), allowed("gold"), rejected("gold", "user@gold")},
		},
		"ClaimArray": {
			reason:  "An array claim groups: [x, staff] chooses the unlimited tier.",
			oidc:    true,
			calls:   repeat(tierCall{bearer(map[string]any{"sub": "bob", "groups": []string{"x", "staff"}}), echo}, 3),
			want:    []tierResult{ok(policyStaff), ok(policyStaff), ok(policyStaff)},
			records: []tierRecord{allowed("staff"), allowed("staff"), allowed("staff")},
		},
		"ClaimNumber": {
			reason:  "A number claim matches nothing: the default envelope.",
			oidc:    true,
			calls:   repeat(tierCall{bearer(map[string]any{"sub": "carol", "plan": 5}), echo}, 2),
			want:    []tierResult{ok(policyDefault), limited(policyDefault, "user")},
			records: []tierRecord{allowed(""), rejected("", "user")},
		},
		"ClaimMissing": {
			reason:  "Without the claim: the default envelope.",
			oidc:    true,
			calls:   repeat(tierCall{bearer(map[string]any{"sub": "dave"}), echo}, 2),
			want:    []tierResult{ok(policyDefault), limited(policyDefault, "user")},
			records: []tierRecord{allowed(""), rejected("", "user")},
		},
		"ClaimNull": {
			reason:  "A null claim: the default envelope.",
			oidc:    true,
			calls:   repeat(tierCall{bearer(map[string]any{"sub": "erin", "plan": json.RawMessage("null")}), echo}, 2),
			want:    []tierResult{ok(policyDefault), limited(policyDefault, "user")},
			records: []tierRecord{allowed(""), rejected("", "user")},
		},
		"ClaimHeaderIgnored": {
			reason:  "With claim tiers a header naming a tier chooses nothing.",
			oidc:    true,
			calls:   repeat(tierCall{mergeHeaders(bearer(map[string]any{"sub": "frank"}), hdr("X-Plan", "gold", "Plan", "gold")), echo}, 2),
			want:    []tierResult{ok(policyDefault), limited(policyDefault, "user")},
			records: []tierRecord{allowed(""), rejected("", "user")},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var tweak []func(*Options)
			if tc.oidc {
				authn, err := auth.New(t.Context(), v1alpha1.ProxyAuth{OIDC: &v1alpha1.OIDCConfig{Issuer: issuer.URL(), Audience: testoidc.Audience}},
					auth.WithHTTPClient(issuer.Client()))
				if err != nil {
					t.Fatalf("auth.New: %v", err)
				}
				tweak = append(tweak, func(o *Options) { o.Auth = authn })
			}
			f := newFixture(t, tierConfig(tc.oidc), v1alpha1.ProxyResponses{}, tweak...)
			var got []tierResult
			for _, c := range tc.calls {
				got = append(got, f.tierDo(t, c))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
			if diff := cmp.Diff(tc.records, f.tierRecords(t)); diff != "" {
				t.Errorf("%s\ndecision log: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func mergeHeaders(hs ...http.Header) http.Header {
	out := http.Header{}
	for _, h := range hs {
		for k, vs := range h {
			out[k] = append(out[k], vs...)
		}
	}
	return out
}

// TestTierMetrics: decisions are counted by tier, "" for no tier; refused tier headers are
// counted by reason.
func TestTierMetrics(t *testing.T) {
	f := newFixture(t, tierConfig(false), v1alpha1.ProxyResponses{})
	gold := tierCall{http.Header{"X-User": {"alice"}, "X-Plan": {"gold"}}, toolCall("1", "echo")}
	for range 4 {
		f.tierDo(t, gold)
	}
	f.tierDo(t, tierCall{http.Header{"X-User": {"bob"}}, toolCall("1", "echo")})
	f.tierDo(t, tierCall{http.Header{"X-User": {"bob"}, "X-Plan": {"gold", "gold"}}, toolCall("1", "echo")})
	f.tierDo(t, tierCall{http.Header{"X-User": {"bob"}, "X-Plan": {"gold"}, "Connection": {"X-Plan"}}, toolCall("1", "echo")})
	type counts struct{ GoldAllowed, GoldRejected, NoneAllowed, Repeated, Connection float64 }
	m := f.metrics
	got := counts{
		GoldAllowed:  testutil.ToFloat64(m.decisions.WithLabelValues(ratelimit.MethodToolsCall, string(ratelimit.OutcomeAllowed), "gold")),
		GoldRejected: testutil.ToFloat64(m.decisions.WithLabelValues(ratelimit.MethodToolsCall, string(ratelimit.OutcomeRejected), "gold")),
		NoneAllowed:  testutil.ToFloat64(m.decisions.WithLabelValues(ratelimit.MethodToolsCall, string(ratelimit.OutcomeAllowed), "")),
		Repeated:     testutil.ToFloat64(m.refused.WithLabelValues("header_repeated")),
		Connection:   testutil.ToFloat64(m.refused.WithLabelValues("connection_header")),
	}
	if diff := cmp.Diff(counts{GoldAllowed: 3, GoldRejected: 1, NoneAllowed: 1, Repeated: 1, Connection: 1}, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
	if n := testutil.ToFloat64(m.rejections.WithLabelValues("user@gold", string(ratelimit.ScopePerUser))); n != 1 {
		t.Errorf("tollgate_rejections_total{bucket=\"user@gold\"} %v, want 1", n)
	}
}

// TestTierReload: tiers reload with the limits: a reload that changes the tiers (their header,
// their buckets) takes effect on the next request, header rules included.
func TestTierReload(t *testing.T) {
	cfg := tierConfig(false)
	f := newFixture(t, cfg, v1alpha1.ProxyResponses{})
	gold := func(header string) tierCall {
		return tierCall{http.Header{"X-User": {"alice"}, header: {"gold"}}, toolCall("1", "echo")}
	}
	twice := func(header string) tierCall {
		return tierCall{http.Header{"X-User": {"bob"}, header: {"gold", "gold"}}, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`}
	}
	before := []tierResult{f.tierDo(t, gold("X-Plan")), f.tierDo(t, twice("X-Plan")), f.tierDo(t, twice("X-Tier"))}

	next := tierConfig(false)
	next.Tiers[0].Match.Header = "X-Tier"
	next.Tiers[1].Match.Header = "X-Tier"
	next.Tiers[0].PerUser = bucket(5, time.Minute)
	c := redis.NewClient(&redis.Options{Addr: f.mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	lim, err := ratelimit.New(c, "tools", "demo", next)
	if err != nil {
		t.Fatalf("ratelimit.New: %v", err)
	}
	f.h.Update(Limits{Limiter: lim, Config: next, MaxBodyBytes: 1024})
	after := []tierResult{f.tierDo(t, gold("X-Tier")), f.tierDo(t, gold("X-Plan")), f.tierDo(t, twice("X-Tier")), f.tierDo(t, twice("X-Plan"))}

	policyGold5 := `"shared";q=100;w=60, "user@gold";q=5;w=60`
	want := [][]tierResult{
		{{Status: 200, Forwarded: true, Policy: policyGold}, {Status: 400, Message: "Invalid Request"}, {Status: 200, Forwarded: true}},
		{
			{Status: 200, Forwarded: true, Policy: policyGold5},                       // the new header, the new bucket
			{Status: 200, Forwarded: true, Policy: policyDefault},                     // X-Plan chooses nothing now
			{Status: 400, Message: "Invalid Request"}, {Status: 200, Forwarded: true}, // the rules follow the header
		},
	}
	if diff := cmp.Diff(want, [][]tierResult{before, after}); diff != "" {
		t.Errorf("-want +got (before and after the reload):\n%s", diff)
	}
}

// TestTierPolicyNames: the policy names cached when limits are applied cover the tiers'
// buckets, so headers, 429 bodies and metrics name them without building a string per call.
func TestTierPolicyNames(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}) // never dialled
	t.Cleanup(func() { _ = c.Close() })
	lim, err := ratelimit.New(c, "tools", "demo", tierConfig(false))
	if err != nil {
		t.Fatalf("ratelimit.New: %v", err)
	}
	names := newPolicyNames(lim)
	got := map[string]bool{}
	for _, id := range lim.Buckets() {
		n, ok := names[id]
		if !ok {
			t.Errorf("bucket %v has no cached policy name", id)
		}
		got[n] = true
	}
	want := map[string]bool{"shared": true, "user": true, "tool:search:user": true, "user@gold": true, "tool:search:user@gold": true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cached policy names: -want +got:\n%s", diff)
	}
}

// TestTierDegraded: with failurePolicy Local, a store failure hands the caller's tier to the
// replica's local buckets (ratelimit.DividedConfig keeps the tiers): gold still gets gold's
// envelope, and the rejection names gold's bucket.
func TestTierDegraded(t *testing.T) {
	cfg := tierConfig(false)
	cfg.FailurePolicy = v1alpha1.FailurePolicyLocal
	f := newFixture(t, cfg, v1alpha1.ProxyResponses{})
	local, err := ratelimit.New(ratelimit.NewLocalStore(ratelimit.LocalOptions{}), "tools", "demo", ratelimit.DividedConfig(cfg, 2))
	if err != nil {
		t.Fatalf("ratelimit.New (local): %v", err)
	}
	f.h.Update(Limits{Limiter: fakeDecider{err: errors.New("dial tcp: connection refused")}, Local: local, Config: cfg, MaxBodyBytes: 1024})
	gold := tierCall{http.Header{"X-User": {"alice"}, "X-Plan": {"gold"}}, toolCall("1", "echo")}
	var got []tierResult
	for range 4 {
		got = append(got, f.tierDo(t, gold))
	}
	policy := `"shared";q=50;w=60, "user@gold";q=3;w=60` // shared divided by 2 replicas; per-user not
	want := []tierResult{
		{Status: 200, Forwarded: true, Policy: policy}, {Status: 200, Forwarded: true, Policy: policy}, {Status: 200, Forwarded: true, Policy: policy},
		{Status: 429, Policy: policy, Limit: "user@gold", Message: "Rate limit exceeded"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]tierRecord{
		{Tier: "gold", Decision: ratelimit.OutcomeDegradedAllowed}, {Tier: "gold", Decision: ratelimit.OutcomeDegradedAllowed},
		{Tier: "gold", Decision: ratelimit.OutcomeDegradedAllowed}, {Tier: "gold", Decision: ratelimit.OutcomeDegradedRejected, Limit: "user@gold"},
	}, f.tierRecords(t)); diff != "" {
		t.Errorf("decision log: -want +got:\n%s", diff)
	}
}
