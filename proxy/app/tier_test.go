package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tollgate-dev/tollgate/internal/testoidc"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// The tier end-to-end tests: a real go-sdk client on both protocol revisions, real signed
// tokens (or a gateway's headers), the whole proxy, a real go-sdk upstream that counts what
// it EXECUTED, and the limiter on miniredis and on a real redis-server.

// tierBackends are the Redis servers the tier tests run against: miniredis always, and a
// real redis-server (missing: a skip, or a failure under CI=true, as testredis decides).
var tierBackends = []struct {
	name  string
	start func(t *testing.T) string // returns host:port
}{
	{"miniredis", func(t *testing.T) string { return miniredis.RunT(t).Addr() }},
	{"redis-server", func(t *testing.T) string { return testredis.Start(t).Addr }},
}

// tierVersions are the protocol revisions; go-sdk serves 2026-07-28 only when stateless.
var tierVersions = []struct {
	version   string
	stateless bool
}{{"2025-11-25", false}, {"2026-07-28", true}}

const oidcTierConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: tiers, name: %s}
upstream: {url: %q}
auth:
  oidc: {issuer: %q, audience: %q}
sessionStorage: {provider: redis, address: %q, timeout: 5s}
rateLimiting:
  perUser: {maxTokens: 2, refillPeriod: 1h}
  tools:
  - name: search
    perUser: {maxTokens: 1, refillPeriod: 1h}
  resources:
  - uri: file:///motd
    shared: {maxTokens: 1, refillPeriod: 1h}
  tiers:
  - name: sre
    match: {claim: groups, values: [sre]}
    unlimited: true
  - name: pro
    match: {claim: plan, values: [pro, team]}
    perUser: {maxTokens: 5, refillPeriod: 1h}
    tools:
    - name: search
      perUser: {maxTokens: 3, refillPeriod: 1h}
`

// callN calls tool n times as s and returns how many calls were admitted.
func callN(t *testing.T, s *mcp.ClientSession, tool string, n int) int {
	t.Helper()
	admitted := 0
	for range n {
		if _, err := s.CallTool(t.Context(), &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}}); err == nil {
			admitted++
		}
	}
	return admitted
}

// TestTiersOIDC: callers are put in tiers by their verified token's claims. A pro user (plan:
// pro) gets the pro envelope — 5 calls, search 3 — and no more; a user in the sre group (an
// array claim) is unlimited per user but still meets shared buckets; a user in no tier gets
// the default envelope of 2 (search 1). Counted by what the upstream executed.
func TestTiersOIDC(t *testing.T) {
	issuer := testoidc.Start(t)
	for _, b := range tierBackends {
		t.Run(b.name, func(t *testing.T) {
			redisAddr := b.start(t)
			for _, v := range tierVersions {
				t.Run(v.version, func(t *testing.T) {
					up := testupstream.StartGo(t, testupstream.GoOptions{Stateless: v.stateless})
					name := b.name + "-v" + strings.ReplaceAll(v.version, "-", "")
					logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
					base, ops := startProxy(t, fmt.Sprintf(oidcTierConfig, name, up.Endpoint(), issuer.URL(), testoidc.Audience, redisAddr),
						func(s *Settings) { s.DecisionLog = logPath })
					endpoint := base + "/mcp"
					token := func(claims map[string]any) string { return issuer.Token(t, claims) }

					pro := connect(t, endpoint, v.version, token(map[string]any{"sub": "paula", "plan": "pro"}))
					proSearch := connect(t, endpoint, v.version, token(map[string]any{"sub": "quinn", "plan": "team"}))
					sre := connect(t, endpoint, v.version, token(map[string]any{"sub": "sam", "plan": "free", "groups": []string{"x", "sre"}}))
					plain := connect(t, endpoint, v.version, token(map[string]any{"sub": "dora", "plan": "free"}))
					odd := connect(t, endpoint, v.version, token(map[string]any{"sub": "otto", "plan": 1, "groups": nil}))

					type admitted struct{ ProEcho, ProSearch, SREEcho, SREMotd, PlainEcho, PlainSearch, OddEcho int }
					got := admitted{
						ProEcho:   callN(t, pro, "echo", 8),
						ProSearch: callN(t, proSearch, "search", 5),
						SREEcho:   callN(t, sre, "echo", 12),
						PlainEcho: callN(t, plain, "echo", 4),
						OddEcho:   callN(t, odd, "echo", 4),
					}
					for range 2 {
						if _, err := sre.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "file:///motd"}); err == nil {
							got.SREMotd++
						}
					}
					// dora's per-user bucket (2) is spent: her search is refused by it.
					got.PlainSearch = callN(t, plain, "search", 2)
					want := admitted{ProEcho: 5, ProSearch: 3, SREEcho: 12, SREMotd: 1, PlainEcho: 2, PlainSearch: 0, OddEcho: 2}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("calls admitted by tier: -want +got:\n%s", diff)
					}
					executed := up.Counts(t)
					wantExecuted := map[string]int{
						testupstream.KeyEcho:   want.ProEcho + want.SREEcho + want.PlainEcho + want.OddEcho,
						testupstream.KeySearch: want.ProSearch,
						testupstream.KeyMOTD:   want.SREMotd,
					}
					if diff := cmp.Diff(wantExecuted, executed); diff != "" {
						t.Errorf("what the upstream executed: -want +got:\n%s", diff)
					}

					// The raw 429 of a pro user names the tier's bucket in its headers and body.
					status, hdr, limit := rawToolCall(t, endpoint, v.version, http.Header{"Authorization": {"Bearer " + token(map[string]any{"sub": "paula", "plan": "pro"})}}, "echo")
					if status != http.StatusTooManyRequests || limit != "user@pro" ||
						!strings.Contains(hdr.Get("RateLimit-Policy"), `"user@pro";q=5;w=3600`) || !strings.Contains(hdr.Get("RateLimit"), `"user@pro";r=0;`) {
						t.Errorf("pro's raw 429: %d, limit %q, RateLimit-Policy %q, RateLimit %q", status, limit, hdr.Get("RateLimit-Policy"), hdr.Get("RateLimit"))
					}

					for sample, want := range map[string]float64{
						`tollgate_decisions_total{method="tools/call",outcome="allowed",tier="pro"}`:      8,
						`tollgate_decisions_total{method="tools/call",outcome="rejected",tier="pro"}`:     3 + 2 + 1,
						`tollgate_decisions_total{method="tools/call",outcome="allowed",tier="sre"}`:      12,
						`tollgate_decisions_total{method="resources/read",outcome="rejected",tier="sre"}`: 1,
						`tollgate_decisions_total{method="tools/call",outcome="allowed",tier=""}`:         4,
						`tollgate_decisions_total{method="tools/call",outcome="rejected",tier=""}`:        6,
						`tollgate_rejections_total{bucket="user@pro",scope="perUser"}`:                    4,
						`tollgate_rejections_total{bucket="tool:search:user@pro",scope="perUser"}`:        2,
					} {
						if got := metricValue(t, ops, sample); got != want {
							t.Errorf("%s = %v, want %v", sample, got, want)
						}
					}
					byTier := decisionsByTier(t, logPath)
					if diff := cmp.Diff(map[string]int{"pro": 8 + 5 + 1, "sre": 12 + 2, "": 4 + 2 + 4}, byTier); diff != "" {
						t.Errorf("decision-log lines of tools/call and resources/read by tier: -want +got:\n%s", diff)
					}
				})
			}
		})
	}
}

const headerTierConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: tiers, name: %s}
upstream: {url: %q}
auth:
  header: {name: X-User, trustedProxies: [127.0.0.1/32, "::1/128"]}
sessionStorage: {provider: redis, address: %q, timeout: 5s}
rateLimiting:
  perUser: {maxTokens: 1, refillPeriod: 1h}
  tiers:
  - name: gold
    match: {header: X-Plan, values: [gold]}
    perUser: {maxTokens: 4, refillPeriod: 1h}
`

// headers sets headers on every request, as an authenticating gateway would, and then the
// headers of override (an empty value list deletes the header): what a caller adds on its
// way around the gateway, switched on once its session is open.
type headers struct {
	set      http.Header
	override *atomic.Pointer[http.Header]
	next     http.RoundTripper
}

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range h.set {
		r.Header[k] = vs
	}
	if o := h.override.Load(); o != nil {
		for k, vs := range *o {
			if len(vs) == 0 {
				delete(r.Header, k)
				continue
			}
			r.Header[k] = vs // as written: repeated, or not canonical (X_Plan)
		}
	}
	return h.next.RoundTrip(r)
}

// connectWith connects a go-sdk client that sends hdr on every request, and returns a switch
// for the override headers of its later requests.
func connectWith(t *testing.T, endpoint, version string, hdr http.Header) (*mcp.ClientSession, *atomic.Pointer[http.Header]) {
	t.Helper()
	override := &atomic.Pointer[http.Header]{}
	c := mcp.NewClient(&mcp.Implementation{Name: "tiers", Version: "1.0.0"}, nil)
	tr := &mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: headers{hdr, override, http.DefaultTransport}, Timeout: 10 * time.Second},
		MaxRetries: -1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s) through the proxy: %v", version, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, override
}

// TestTiersHeader: behind a gateway, X-Plan: gold chooses the gold tier (4 calls) and no
// X-Plan the default (1). A caller cannot pick a better tier: a repeated X-Plan, a Connection
// header naming it and a look-alike are 400, an X-Plan without an identity is 401, and none
// of them reaches the upstream or spends anyone's tokens.
func TestTiersHeader(t *testing.T) {
	for _, b := range tierBackends {
		t.Run(b.name, func(t *testing.T) {
			redisAddr := b.start(t)
			for _, v := range tierVersions {
				t.Run(v.version, func(t *testing.T) {
					up := testupstream.StartGo(t, testupstream.GoOptions{Stateless: v.stateless})
					name := b.name + "-v" + strings.ReplaceAll(v.version, "-", "")
					base, ops := startProxy(t, fmt.Sprintf(headerTierConfig, name, up.Endpoint(), redisAddr))
					endpoint := base + "/mcp"

					gold, _ := connectWith(t, endpoint, v.version, http.Header{"X-User": {"gina"}, "X-Plan": {"gold"}})
					plain, _ := connectWith(t, endpoint, v.version, http.Header{"X-User": {"pete"}})
					if got := []int{callN(t, gold, "echo", 6), callN(t, plain, "echo", 3)}; !cmp.Equal(got, []int{4, 1}) {
						t.Errorf("admitted: gold %d of 6 (want 4), default %d of 3 (want 1)", got[0], got[1])
					}
					executed := up.Executed(t, testupstream.KeyEcho)
					if executed != 5 {
						t.Errorf("the upstream executed echo %d times, want 5 (gold 4, default 1)", executed)
					}

					// mallory, in no tier, opens a session as herself, then tries to pick gold
					// on her calls. Each try is refused before it is decided: the upstream runs
					// none of them, and her own default envelope (1) stays whole.
					h := func(kv ...string) http.Header {
						out := http.Header{}
						for i := 0; i+1 < len(kv); i += 2 {
							out[kv[i]] = append(out[kv[i]], kv[i+1])
						}
						return out
					}
					tries := map[string]struct {
						override http.Header
						refused  string // the status text go-sdk reports
					}{
						"RepeatedSame":     {h("X-Plan", "gold", "X-Plan", "gold"), "Bad Request"},
						"RepeatedOther":    {h("X-Plan", "free", "X-Plan", "gold"), "Bad Request"},
						"ConnectionXPlan":  {h("X-Plan", "gold", "Connection", "X-Plan"), "Bad Request"},
						"ConnectionLower":  {h("X-Plan", "gold", "Connection", "keep-alive, x-plan"), "Bad Request"},
						"LookAlike":        {h("X_Plan", "gold"), "Bad Request"},
						"WithoutIdentity":  {http.Header{"X-User": nil, "X-Plan": {"gold"}}, "Unauthorized"},
						"EmptyIdentity":    {h("X-User", "", "X-Plan", "gold"), "Unauthorized"},
						"IdentityRepeated": {h("X-User", "mallory", "X-User", "gina", "X-Plan", "gold"), "Unauthorized"},
					}
					for name, try := range tries {
						mallory, override := connectWith(t, endpoint, v.version, http.Header{"X-User": {"mallory"}})
						override.Store(&try.override)
						_, err := mallory.CallTool(t.Context(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
						override.Store(nil) // the session's other requests (its stream, its end) as herself
						if err == nil || !strings.Contains(err.Error(), try.refused) {
							t.Errorf("%s: %v, want the proxy's %s", name, err, try.refused)
						}
					}
					// The header rules hold for every request, a listing too.
					if status, _, _ := rawToolCall(t, endpoint, v.version, h("X-User", "mallory", "X-Plan", "gold", "X-Plan", "gold"), ""); status != http.StatusBadRequest {
						t.Errorf("tools/list with a repeated X-Plan: %d, want 400", status)
					}
					if n := up.Executed(t, testupstream.KeyEcho); n != executed {
						t.Errorf("the upstream executed echo %d more times during the tries, want none", n-executed)
					}
					mallory, _ := connectWith(t, endpoint, v.version, http.Header{"X-User": {"mallory"}})
					if n := callN(t, mallory, "echo", 3); n != 1 {
						t.Errorf("mallory after her tries: %d of 3 admitted, want the default 1", n)
					}
					// At least the three tries above: the client's own background requests (its
					// stream on 2025-11-25) may have carried the header while it was switched on.
					if n := metricValue(t, ops, `tollgate_requests_refused_total{reason="header_repeated"}`); n < 3 {
						t.Errorf(`tollgate_requests_refused_total{reason="header_repeated"} = %v, want at least 3`, n)
					}
					if n := metricValue(t, ops, `tollgate_decisions_total{method="tools/call",outcome="allowed",tier="gold"}`); n != 4 {
						t.Errorf(`tollgate_decisions_total{...,tier="gold"} allowed = %v, want 4`, n)
					}
				})
			}
		})
	}
}

// rawToolCall sends one tools/call of tool (a tools/list when tool is "") with hdr, as a
// client of version would, and returns the status, the headers and the error's data.limit.
func rawToolCall(t *testing.T, endpoint, version string, hdr http.Header, tool string) (int, http.Header, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":"raw","method":"tools/list"}`
	if tool != "" {
		body = fmt.Sprintf(`{"jsonrpc":"2.0","id":"raw","method":"tools/call","params":{"name":%q,"arguments":{"text":"x"}}}`, tool)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs // as written: repeated, or not canonical (X_Plan)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", version)
	if version >= "2026-07-28" {
		method, name := "tools/list", ""
		if tool != "" {
			method, name = "tools/call", tool
		}
		req.Header.Set("Mcp-Method", method)
		if name != "" {
			req.Header.Set("Mcp-Name", name)
		}
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		Error struct {
			Data any `json:"data"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out) // a forwarded answer may be SSE: no limit then
	limit := ""
	if d, ok := out.Error.Data.(map[string]any); ok {
		limit, _ = d["limit"].(string)
	}
	return resp.StatusCode, resp.Header, limit
}

// decisionsByTier counts the decision log's lines of limited methods by tier.
func decisionsByTier(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("decision log: %v", err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r ratelimit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("decision log line %q: %v", sc.Text(), err)
		}
		if ratelimit.IsLimited(r.Method) {
			out[r.Tier]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the decision log: %v", err)
	}
	return out
}

// TestTiersReload: tiers are part of rateLimiting and reload without a restart: a new tier
// header and a new tier bucket apply from the next request, the header rules with them.
func TestTiersReload(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{Stateless: true})
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	config := func(header string, maxTokens int) string {
		return fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: tiers, name: reload}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: memory}
rateLimiting:
  perUser: {maxTokens: 1, refillPeriod: 1h}
  tiers:
  - name: gold
    match: {header: %s, values: [gold]}
    perUser: {maxTokens: %d, refillPeriod: 1h}
`, up.Endpoint(), header, maxTokens)
	}
	write := func(s string) {
		// Write then rename, as a ConfigMap volume swaps its files.
		if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write(config("X-Plan", 1))
	base, _ := startProxy(t, config("X-Plan", 1), func(s *Settings) {
		s.ConfigPath = path
		s.ReloadInterval = 20 * time.Millisecond
	})
	endpoint := base + "/mcp"
	// A stateless go-sdk server runs a 2025-11-25 call without a session: raw calls execute.
	const version = "2025-11-25"
	call := func(user, header string) (int, string) {
		status, hdr, _ := rawToolCall(t, endpoint, version, http.Header{"X-User": {user}, header: {"gold"}}, "echo")
		return status, hdr.Get("RateLimit-Policy")
	}
	type answer struct {
		Status int
		Policy string
	}
	var got []answer
	for range 2 {
		status, policy := call("alice", "X-Plan")
		got = append(got, answer{status, policy})
	}
	write(config("X-Tier", 3))
	// carol's first call in gold, once the reload applied (before it, X-Tier chose nothing).
	waitUntil(t, "the new tier header and bucket to apply", func() bool {
		status, policy := call("carol", "X-Tier")
		return status == http.StatusOK && policy == `"user@gold";q=3;w=3600`
	})
	// alice's gold bucket is the same bucket under its new header: spent, it stays spent and
	// refills at the new rate (3 an hour: a token in 20 minutes).
	status, policy := call("alice", "X-Tier")
	got = append(got, answer{status, policy})
	want := []answer{
		{http.StatusOK, `"user@gold";q=1;w=3600`},
		{http.StatusTooManyRequests, `"user@gold";q=1;w=3600`},
		{http.StatusTooManyRequests, `"user@gold";q=3;w=3600`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("alice in gold, before and after the reload: -want +got:\n%s", diff)
	}
	twice := func(header string) int {
		status, _, _ := rawToolCall(t, endpoint, version, http.Header{"X-User": {"bob"}, header: {"gold", "gold"}}, "")
		return status
	}
	if got := []int{twice("X-Tier"), twice("X-Plan")}; !cmp.Equal(got, []int{http.StatusBadRequest, http.StatusOK}) {
		t.Errorf("a repeated header after the reload: X-Tier %d (want 400), X-Plan %d (want 200: no tier reads it now)", got[0], got[1])
	}
}
