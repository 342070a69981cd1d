package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testoidc"
)

// mcpURL is where the test requests go; challenges point at its metadata.
const (
	mcpURL      = "http://mcp.example.com/mcp"
	metadataMCP = "http://mcp.example.com/.well-known/oauth-protected-resource/mcp"
)

// ignoreCause compares *Error by Status, Message and Header.
var ignoreCause = cmpopts.IgnoreUnexported(Error{})

func request(authorization ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, mcpURL, nil)
	for _, v := range authorization {
		r.Header.Add("Authorization", v)
	}
	return r
}

// challenge is the WWW-Authenticate header for metadata URL u, with an error code and
// description when code is not "".
func challenge(u, code, desc string) http.Header {
	v := `Bearer resource_metadata="` + u + `"`
	if code != "" {
		v += `, error="` + code + `", error_description="` + desc + `"`
	}
	return http.Header{"Www-Authenticate": {v}}
}

// invalidToken is the 401 for an invalid token; its error_description is msg without the
// double quotes RFC 6750 does not allow there.
func invalidToken(msg string) *Error {
	desc := strings.ReplaceAll(msg, `"`, "")
	return &Error{Status: http.StatusUnauthorized, Message: msg, Header: challenge(metadataMCP, "invalid_token", desc)}
}

func invalidRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Message: msg, Header: challenge(metadataMCP, "invalid_request", msg)}
}

func oidcConfig(iss *testoidc.Issuer, claim string) v1alpha1.ProxyAuth {
	return v1alpha1.ProxyAuth{OIDC: &v1alpha1.OIDCConfig{Issuer: iss.URL(), Audience: testoidc.Audience, UserClaim: claim}}
}

// hs256 signs claims with HMAC, the algorithm-confusion attack on RSA verifiers.
func hs256(t testing.TB, claims map[string]any) string {
	t.Helper()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOIDCAuthenticate(t *testing.T) {
	iss := testoidc.Start(t)
	bearer := func(tok string) []string { return []string{"Bearer " + tok} }
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }

	type args struct {
		claim         string // userClaim; "" is the default, sub
		authorization []string
		now           func() time.Time
	}
	type want struct {
		user string
		err  error
	}
	cases := map[string]struct {
		reason string
		args   args
		want   want
	}{
		"Valid": {
			reason: "A token the issuer signed for the audience identifies its sub.",
			args:   args{authorization: bearer(iss.Token(t, nil))},
			want:   want{user: testoidc.Subject},
		},
		"SchemeAnyCase": {
			reason: "The auth scheme is case-insensitive (RFC 9110 section 11.1).",
			args:   args{authorization: []string{"bEARER " + iss.Token(t, nil)}},
			want:   want{user: testoidc.Subject},
		},
		"AudienceAmongMany": {
			reason: "aud may be an array; it must contain the audience.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"aud": []string{"other", testoidc.Audience}}))},
			want:   want{user: testoidc.Subject},
		},
		"CustomClaim": {
			reason: "userClaim names the claim that identifies the user.",
			args:   args{claim: "email", authorization: bearer(iss.Token(t, map[string]any{"email": "alice@example.com"}))},
			want:   want{user: "alice@example.com"},
		},
		"Missing": {
			reason: "No token is a 401 whose challenge points at the RFC 9728 metadata, with no error code, so MCP clients start OAuth.",
			want:   want{err: &Error{Status: http.StatusUnauthorized, Message: "missing bearer token", Header: challenge(metadataMCP, "", "")}},
		},
		"EmptyAuthorization": {
			reason: "An empty Authorization header carries no credentials: a missing token.",
			args:   args{authorization: []string{""}},
			want:   want{err: &Error{Status: http.StatusUnauthorized, Message: "missing bearer token", Header: challenge(metadataMCP, "", "")}},
		},
		"BasicScheme": {
			reason: "Another scheme is no bearer token: the plain challenge, no error code (RFC 6750 section 3.1).",
			args:   args{authorization: []string{"Basic dXNlcjpwYXNz"}},
			want:   want{err: &Error{Status: http.StatusUnauthorized, Message: "unsupported authorization scheme", Header: challenge(metadataMCP, "", "")}},
		},
		"BearerAlone": {
			reason: "Bearer with no token is a malformed request.",
			args:   args{authorization: []string{"Bearer"}},
			want:   want{err: invalidRequest("empty bearer token")},
		},
		"BearerSpaceOnly": {
			reason: "Bearer and spaces is a malformed request.",
			args:   args{authorization: []string{"Bearer   "}},
			want:   want{err: invalidRequest("empty bearer token")},
		},
		"TokenWithSpace": {
			reason: "A bearer token is one b64token; two words are a malformed request.",
			args:   args{authorization: []string{"Bearer abc def"}},
			want:   want{err: invalidRequest("malformed bearer token")},
		},
		"TwoAuthorizationHeaders": {
			reason: "Two Authorization headers are a malformed request, even when both hold the same valid token.",
			args:   args{authorization: append(bearer(iss.Token(t, nil)), bearer(iss.Token(t, nil))...)},
			want:   want{err: invalidRequest("more than one Authorization header")},
		},
		"NotAJWT": {
			reason: "A b64token that is not a JWT is an invalid token.",
			args:   args{authorization: bearer("not-a-jwt")},
			want:   want{err: invalidToken("malformed token")},
		},
		"WrongAudience": {
			reason: "aud must contain the configured audience.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"aud": "someone-else"}))},
			want:   want{err: invalidToken("token audience mismatch")},
		},
		"NoAudience": {
			reason: "A token with no aud is for nobody.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"aud": nil}))},
			want:   want{err: invalidToken("token audience mismatch")},
		},
		"WrongIssuer": {
			reason: "iss must be the configured issuer, even when the signing key is the issuer's.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"iss": "https://evil.example.com"}))},
			want:   want{err: invalidToken("token issuer mismatch")},
		},
		"Expired": {
			reason: "A token whose exp has passed on the verifier's clock is refused.",
			args:   args{authorization: bearer(iss.Token(t, nil)), now: later},
			want:   want{err: invalidToken("token expired")},
		},
		"NoExpiry": {
			reason: "A token without exp never counts as unexpired.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"exp": nil}))},
			want:   want{err: invalidToken("token expired")},
		},
		"NotYetValid": {
			reason: "nbf beyond the library's five minutes of leeway is refused.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"nbf": time.Now().Add(30 * time.Minute).Unix()}))},
			want:   want{err: invalidToken("token not yet valid")},
		},
		"UnknownKey": {
			reason: "A token signed by a key the JWKS does not hold, under the issuer's kid, is refused.",
			args:   args{authorization: bearer(iss.UnknownKeyToken(t, nil))},
			want:   want{err: invalidToken("token signature invalid")},
		},
		"AlgNone": {
			reason: "An unsigned token (alg none) is refused before any key is consulted.",
			args:   args{authorization: bearer(iss.UnsignedToken(t, nil))},
			want:   want{err: invalidToken("token signing algorithm not allowed")},
		},
		"HMAC": {
			reason: "An HMAC-signed token is refused: only asymmetric algorithms are allowed.",
			args:   args{authorization: bearer(hs256(t, iss.Claims(nil)))},
			want:   want{err: invalidToken("token signing algorithm not allowed")},
		},
		"ClaimAbsent": {
			reason: "A token without the user claim identifies nobody.",
			args:   args{claim: "email", authorization: bearer(iss.Token(t, nil))},
			want:   want{err: invalidToken(`token has no "email" claim`)},
		},
		"ClaimNull": {
			reason: "A null user claim is an absent one.",
			args:   args{claim: "email", authorization: bearer(iss.Token(t, map[string]any{"email": nil}))},
			want:   want{err: invalidToken(`token has no "email" claim`)},
		},
		"ClaimNumber": {
			reason: "A numeric user claim is refused, not formatted into an id.",
			args:   args{claim: "uid", authorization: bearer(iss.Token(t, map[string]any{"uid": 42}))},
			want:   want{err: invalidToken(`token claim "uid" is not a string`)},
		},
		"ClaimArray": {
			reason: "An array user claim is refused.",
			args:   args{claim: "groups", authorization: bearer(iss.Token(t, map[string]any{"groups": []string{"a", "b"}}))},
			want:   want{err: invalidToken(`token claim "groups" is not a string`)},
		},
		"ClaimEmpty": {
			reason: "An empty user claim is refused: \"\" would mean anonymous.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"sub": ""}))},
			want:   want{err: invalidToken(`token claim "sub" is empty`)},
		},
		"SubAbsent": {
			reason: "A token without sub identifies nobody under the default claim.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"sub": nil}))},
			want:   want{err: invalidToken(`token has no "sub" claim`)},
		},
		"SubNumber": {
			reason: "go-oidc itself refuses a non-string sub, as a malformed token.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"sub": 42}))},
			want:   want{err: invalidToken("malformed token")},
		},
		"ClaimControlCharacters": {
			reason: "A user claim with control characters is no user id.",
			args:   args{authorization: bearer(iss.Token(t, map[string]any{"sub": "alice\r\nX-Injected: 1"}))},
			want:   want{err: invalidToken(`token claim "sub" contains control characters`)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			opts := []Option{WithHTTPClient(iss.Client())}
			if tc.args.now != nil {
				opts = append(opts, WithClock(tc.args.now))
			}
			a, err := New(context.Background(), oidcConfig(iss, tc.args.claim), opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			id, err := a.Authenticate(request(tc.args.authorization...))
			user := id.User
			if diff := cmp.Diff(tc.want.user, user); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want user, +got user:\n%s", tc.reason, diff)
			}
			if diff := cmp.Diff(tc.want.err, err, ignoreCause); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want error, +got error:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestOIDCChallenge(t *testing.T) {
	type args struct {
		publicURL string
		target    string
		tls       bool
		header    http.Header
	}
	cases := map[string]struct {
		reason string
		args   args
		want   http.Header
	}{
		"FromRequest": {
			reason: "Without a public URL the metadata URL is built from the request's scheme, Host and path.",
			args:   args{target: "http://mcp.example.com/mcp"},
			want:   challenge("http://mcp.example.com/.well-known/oauth-protected-resource/mcp", "", ""),
		},
		"TLS": {
			reason: "A request that arrived over TLS gets an https URL.",
			args:   args{target: "https://mcp.example.com:8443/v1/mcp", tls: true},
			want:   challenge("https://mcp.example.com:8443/.well-known/oauth-protected-resource/v1/mcp", "", ""),
		},
		"ForwardedProto": {
			reason: "X-Forwarded-Proto: https from a TLS-terminating ingress gives an https URL.",
			args:   args{target: "http://mcp.example.com/mcp", header: http.Header{"X-Forwarded-Proto": {"HTTPS"}}},
			want:   challenge("https://mcp.example.com/.well-known/oauth-protected-resource/mcp", "", ""),
		},
		"ForwardedProtoList": {
			reason: "The first X-Forwarded-Proto element is the client's.",
			args:   args{target: "http://mcp.example.com/mcp", header: http.Header{"X-Forwarded-Proto": {"https, http"}}},
			want:   challenge("https://mcp.example.com/.well-known/oauth-protected-resource/mcp", "", ""),
		},
		"ForwardedProtoJunk": {
			reason: "An X-Forwarded-Proto other than http or https is ignored.",
			args:   args{target: "http://mcp.example.com/mcp", header: http.Header{"X-Forwarded-Proto": {`javascript"`}}},
			want:   challenge("http://mcp.example.com/.well-known/oauth-protected-resource/mcp", "", ""),
		},
		"RootPath": {
			reason: "An endpoint at / has its metadata at the bare well-known path (RFC 9728 section 3.1).",
			args:   args{target: "http://mcp.example.com/"},
			want:   challenge("http://mcp.example.com/.well-known/oauth-protected-resource", "", ""),
		},
		"PublicURL": {
			reason: "A public URL replaces the request's scheme and host, and its path prefixes the request's.",
			args: args{publicURL: "https://example.com/tools/", target: "http://10.0.0.7:8080/mcp",
				header: http.Header{"X-Forwarded-Proto": {"http"}}},
			want: challenge("https://example.com/.well-known/oauth-protected-resource/tools/mcp", "", ""),
		},
		"EscapedPath": {
			reason: "Quotes and spaces in the path stay percent-encoded inside the quoted string.",
			args:   args{target: `http://mcp.example.com/a%22b%20c`},
			want:   challenge("http://mcp.example.com/.well-known/oauth-protected-resource/a%22b%20c", "", ""),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var opts []Option
			if tc.args.publicURL != "" {
				opts = append(opts, WithPublicURL(tc.args.publicURL))
			}
			cfg := v1alpha1.ProxyAuth{OIDC: &v1alpha1.OIDCConfig{Issuer: "https://issuer.example.com", Audience: "a"}}
			a, err := New(context.Background(), cfg, opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			r := httptest.NewRequest(http.MethodPost, tc.args.target, nil)
			if !tc.args.tls {
				r.TLS = nil
			}
			for k, v := range tc.args.header {
				r.Header[k] = v
			}
			if diff := cmp.Diff(tc.want, a.Challenge(r)); diff != "" {
				t.Errorf("%s\nChallenge(...): -want, +got:\n%s", tc.reason, diff)
			}
			if !a.Required() {
				t.Errorf("Required(): want true for OIDC")
			}
		})
	}
}

// TestOIDCLazyDiscovery starts the proxy while the issuer is down: New succeeds, requests get
// 503 (not 401, the token may be fine), retries wait DiscoveryRetryPause, and the first
// request after the issuer is back discovers it; success is cached.
func TestOIDCLazyDiscovery(t *testing.T) {
	iss := testoidc.Start(t)
	iss.SetDown(true)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

	a, err := New(context.Background(), oidcConfig(iss, ""), WithHTTPClient(iss.Client()), WithClock(clock))
	if err != nil {
		t.Fatalf("New with the issuer down: %v", err)
	}
	if diff := cmp.Diff(testoidc.Hits{}, iss.Hits()); diff != "" {
		t.Errorf("New must not fetch anything: -want hits, +got hits:\n%s", diff)
	}
	tok := iss.Token(t, nil)
	unavailable := &Error{Status: http.StatusServiceUnavailable, Message: "identity provider unavailable"}

	steps := []struct {
		reason string
		down   bool
		wait   time.Duration
		user   string
		err    error
		hits   testoidc.Hits
	}{
		{reason: "the issuer is down: 503, one discovery attempt", down: true, err: unavailable, hits: testoidc.Hits{Discovery: 1}},
		{reason: "within the retry pause: 503 at once, no new attempt", down: true, wait: time.Second, err: unavailable, hits: testoidc.Hits{Discovery: 1}},
		{reason: "the issuer is back but the pause has not passed", wait: 500 * time.Millisecond, err: unavailable, hits: testoidc.Hits{Discovery: 1}},
		{reason: "after the pause the request discovers the issuer and verifies", wait: DiscoveryRetryPause, user: testoidc.Subject, hits: testoidc.Hits{Discovery: 2, JWKS: 1}},
		{reason: "discovery and keys are cached", user: testoidc.Subject, hits: testoidc.Hits{Discovery: 2, JWKS: 1}},
		{reason: "the cached verifier keeps working while the issuer is down", down: true, user: testoidc.Subject, hits: testoidc.Hits{Discovery: 2, JWKS: 1}},
	}
	for i, s := range steps {
		iss.SetDown(s.down)
		advance(s.wait)
		id, err := a.Authenticate(request("Bearer " + tok))
		user := id.User
		if diff := cmp.Diff(s.user, user); diff != "" {
			t.Errorf("step %d, %s: -want user, +got user:\n%s", i, s.reason, diff)
		}
		if diff := cmp.Diff(s.err, err, ignoreCause); diff != "" {
			t.Errorf("step %d, %s: -want error, +got error:\n%s", i, s.reason, diff)
		}
		if s.err != nil && errors.Unwrap(err) == nil {
			t.Errorf("step %d, %s: the 503 must carry its cause for logs", i, s.reason)
		}
		if diff := cmp.Diff(s.hits, iss.Hits()); diff != "" {
			t.Errorf("step %d, %s: -want hits, +got hits:\n%s", i, s.reason, diff)
		}
	}
}

// TestOIDCConcurrentDiscovery checks that concurrent first requests share one discovery.
func TestOIDCConcurrentDiscovery(t *testing.T) {
	iss := testoidc.Start(t)
	a, err := New(context.Background(), oidcConfig(iss, ""), WithHTTPClient(iss.Client()))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tok := iss.Token(t, nil)
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = a.Authenticate(request("Bearer " + tok)) })
	}
	wg.Wait()
	if diff := cmp.Diff(make([]error, n), errs, cmpopts.EquateErrors()); diff != "" {
		t.Errorf("concurrent Authenticate: -want errors, +got errors:\n%s", diff)
	}
	if diff := cmp.Diff(testoidc.Hits{Discovery: 1, JWKS: 1}, iss.Hits()); diff != "" {
		t.Errorf("concurrent first requests: -want hits, +got hits:\n%s", diff)
	}
}

// TestOIDCJWKSURL covers jwksURL: no discovery, and a JWKS that cannot be fetched is a 503.
func TestOIDCJWKSURL(t *testing.T) {
	iss := testoidc.Start(t)
	cfg := oidcConfig(iss, "")
	cfg.OIDC.JWKSURL = iss.JWKSURL()
	tok := iss.Token(t, nil)
	unavailable := &Error{Status: http.StatusServiceUnavailable, Message: "identity provider unavailable"}

	cases := map[string]struct {
		reason string
		down   bool
		user   string
		err    error
		hits   testoidc.Hits
	}{
		"Up": {
			reason: "With jwksURL the keys come from it, with no discovery.",
			user:   testoidc.Subject,
			hits:   testoidc.Hits{JWKS: 1},
		},
		"Down": {
			reason: "Keys that cannot be fetched make the token unverifiable, not invalid: 503.",
			down:   true,
			err:    unavailable,
			hits:   testoidc.Hits{JWKS: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := iss.Hits()
			iss.SetDown(tc.down)
			defer iss.SetDown(false)
			a, err := New(context.Background(), cfg, WithHTTPClient(iss.Client()))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			id, err := a.Authenticate(request("Bearer " + tok))
			user := id.User
			if diff := cmp.Diff(tc.user, user); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want user, +got user:\n%s", tc.reason, diff)
			}
			if diff := cmp.Diff(tc.err, err, ignoreCause); diff != "" {
				t.Errorf("%s\nAuthenticate(...): -want error, +got error:\n%s", tc.reason, diff)
			}
			after := iss.Hits()
			got := testoidc.Hits{Discovery: after.Discovery - before.Discovery, JWKS: after.JWKS - before.JWKS}
			if diff := cmp.Diff(tc.hits, got); diff != "" {
				t.Errorf("%s\n-want hits, +got hits:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestOIDCJWKSRefetch: forged tokens never make the proxy fetch the issuer's keys again; a
// token signed with a rotated-in key does, at most once per JWKSRefetchInterval; tokens of
// the old key stay valid.
func TestOIDCJWKSRefetch(t *testing.T) {
	iss := testoidc.Start(t)
	a, offset := jwksAuth(t, iss)
	oldTok := iss.Token(t, nil)

	// step authenticates tokens and describes the outcome: "ok" or the 401 message, and how
	// many JWKS fetches the step caused.
	type step struct {
		Outcomes map[string]int
		Fetches  int64
	}
	run := func(toks ...string) step {
		before := iss.Hits().JWKS
		s := step{Outcomes: map[string]int{}}
		for _, tok := range toks {
			_, err := a.Authenticate(request("Bearer " + tok))
			var ae *Error
			switch {
			case err == nil:
				s.Outcomes["ok"]++
			case errors.As(err, &ae):
				s.Outcomes[strconv.Itoa(ae.Status)+" "+ae.Message]++
			default:
				s.Outcomes[err.Error()]++
			}
		}
		s.Fetches = iss.Hits().JWKS - before
		return s
	}
	times := func(n int, tok string) []string { return slices.Repeat([]string{tok}, n) }

	var got []step
	got = append(got, run(oldTok))                                    // first token: the first fetch
	got = append(got, run(times(50, iss.UnknownKeyToken(t, nil))...)) // forged under a known key id
	iss.Rotate(t)
	newTok := iss.Token(t, nil)
	got = append(got, run(times(50, newTok)...)) // a new key id, right after a fetch
	offset.Store(int64(JWKSRefetchInterval))
	got = append(got, run(times(50, newTok)...)) // the interval has passed: one fetch
	got = append(got, run(oldTok))               // the old key is still published
	invalid := "401 token signature invalid"
	want := []step{
		{Outcomes: map[string]int{"ok": 1}, Fetches: 1},
		{Outcomes: map[string]int{invalid: 50}},
		{Outcomes: map[string]int{invalid: 50}},
		{Outcomes: map[string]int{"ok": 50}, Fetches: 1},
		{Outcomes: map[string]int{"ok": 1}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes and JWKS fetches by step: -want +got:\n%s", diff)
	}
}

// TestOIDCJWKSRefresh: a key the issuer withdraws stops verifying tokens within
// JWKSRefreshInterval, with the token cache on or off: a request that finds the keys stale
// starts a fetch in the background (it is itself verified with the keys held, and waits for
// nothing), and the next requests see the new set. A failed refresh keeps the keys.
func TestOIDCJWKSRefresh(t *testing.T) {
	for name, opts := range map[string][]Option{"TokenCache": nil, "NoTokenCache": {WithTokenCache(0, 0)}} {
		t.Run(name, func(t *testing.T) {
			iss := testoidc.Start(t)
			a, offset := jwksAuth(t, iss, opts...)
			outcome := func(tok string) string {
				_, err := a.Authenticate(request("Bearer " + tok))
				var ae *Error
				switch {
				case err == nil:
					return "ok"
				case errors.As(err, &ae):
					return strconv.Itoa(ae.Status) + " " + ae.Message
				}
				return err.Error()
			}
			// waitFetches waits until the issuer was asked n times and no fetch is running.
			waitFetches := func(n int64) {
				t.Helper()
				keys := a.(*oidcAuth).verifier.Load().keys
				idle := func() bool {
					keys.fetches.mu.Lock()
					defer keys.fetches.mu.Unlock()
					return keys.fetches.inflight == nil
				}
				deadline := time.Now().Add(5 * time.Second)
				for iss.Hits().JWKS < n || !idle() {
					if time.Now().After(deadline) {
						t.Fatalf("JWKS fetches: %d, want %d and none running", iss.Hits().JWKS, n)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			type step struct{ Old, New string }
			var got []step

			oldTok := iss.Token(t, nil)
			got = append(got, step{Old: outcome(oldTok)}) // the first fetch
			iss.Rotate(t)
			newTok := iss.Token(t, nil)
			iss.Withdraw(testoidc.KeyID) // the old key is revoked
			offset.Store(int64(JWKSRefreshInterval - time.Second))
			got = append(got, step{Old: outcome(oldTok)}) // keys fresh: still trusted
			iss.SetDown(true)
			offset.Store(int64(JWKSRefreshInterval))
			got = append(got, step{Old: outcome(oldTok)}) // stale: a refresh starts, and fails
			waitFetches(2)
			got = append(got, step{Old: outcome(oldTok)}) // the keys held stay in use
			iss.SetDown(false)
			offset.Store(int64(JWKSRefreshInterval + JWKSRefetchInterval))
			_ = outcome(oldTok) // tried again: served with the keys held, or the new ones if the fetch is quicker
			waitFetches(3)
			got = append(got, step{Old: outcome(oldTok), New: outcome(newTok)})

			want := []step{{Old: "ok"}, {Old: "ok"}, {Old: "ok"}, {Old: "ok"}, {Old: "401 token signature invalid", New: "ok"}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcomes by step: -want +got:\n%s", diff)
			}
			if n := iss.Hits().JWKS; n != 3 {
				t.Errorf("JWKS fetches: %d, want 3 (the first, a failed refresh, a refresh)", n)
			}
		})
	}
}

// jwksAuth is an OIDC authenticator on iss's JWKS URL (no discovery) whose clock stands at
// the test's start plus *offset.
func jwksAuth(t *testing.T, iss *testoidc.Issuer, opts ...Option) (Authenticator, *atomic.Int64) {
	t.Helper()
	cfg := oidcConfig(iss, "")
	cfg.OIDC.JWKSURL = iss.JWKSURL()
	start := time.Now()
	offset := new(atomic.Int64)
	clock := func() time.Time { return start.Add(time.Duration(offset.Load())) }
	a, err := New(context.Background(), cfg, append([]Option{WithHTTPClient(iss.Client()), WithClock(clock)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, offset
}
