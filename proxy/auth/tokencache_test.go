package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/config"
)

// The issuer of the token cache's tests: ES256 keys (fast to make and sign with), a JWKS
// served over HTTP whose keys a test publishes and retires, and tokens signed with any key.
const (
	cacheIssuer   = "https://issuer.cache.test"
	cacheAudience = "tollgate-cache"
)

// t0 is the tests' epoch: every clock is t0 plus an offset, every exp and nbf relative to it.
var t0 = time.Unix(1_900_000_000, 0)

type testIssuer struct {
	srv  *httptest.Server
	keys map[string]testKey // by name

	mu        sync.Mutex
	published []string // names of the keys in the JWKS, in order
}

type testKey struct {
	kid  string // "" signs tokens with no kid
	priv *ecdsa.PrivateKey
}

// newTestIssuer makes keys k1, k2, k3; k1b, another key under k1's kid (a key replaced in
// place); and k4, a key with no kid (a token signed by it names none). It publishes k1.
func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	iss := &testIssuer{keys: map[string]testKey{}, published: []string{"k1"}}
	for name, kid := range map[string]string{"k1": "k1", "k2": "k2", "k3": "k3", "k1b": "k1", "k4": ""} {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("generating key: %v", err)
		}
		iss.keys[name] = testKey{kid: kid, priv: priv}
	}
	iss.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		iss.mu.Lock()
		var set jose.JSONWebKeySet
		for _, name := range iss.published {
			k := iss.keys[name]
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "sig"})
		}
		iss.mu.Unlock()
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(iss.srv.Close)
	return iss
}

// publish makes the JWKS hold exactly the named keys.
func (iss *testIssuer) publish(names ...string) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	iss.published = append([]string(nil), names...)
}

// claims are valid claims for alice (exp an hour after t0) with over applied; a nil value
// removes a claim.
func claims(over map[string]any) map[string]any {
	c := map[string]any{"iss": cacheIssuer, "aud": cacheAudience, "sub": "alice", "exp": t0.Add(time.Hour).Unix()}
	for k, v := range over {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// sign returns claims signed ES256 with the named key.
func (iss *testIssuer) sign(t testing.TB, key string, c map[string]any) string {
	t.Helper()
	k := iss.keys[key]
	var jwk any = k.priv
	if k.kid != "" {
		jwk = jose.JSONWebKey{Key: k.priv, KeyID: k.kid}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("claims: %v", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("serializing: %v", err)
	}
	return tok
}

// testClock is a settable clock, read from several goroutines.
type testClock struct{ off atomic.Int64 }

func (c *testClock) now() time.Time          { return t0.Add(time.Duration(c.off.Load())) }
func (c *testClock) set(d time.Duration)     { c.off.Store(int64(d)) }
func (c *testClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// newCacheAuth returns the OIDC authenticator of iss on clock, with the token cache
// (entries > 0) or without it (0), configured with cfg's fields over the test issuer's.
func newCacheAuth(t testing.TB, iss *testIssuer, clock *testClock, entries, bytes int, cfg v1alpha1.OIDCConfig) *oidcAuth {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = cacheIssuer
	}
	if cfg.Audience == "" {
		cfg.Audience = cacheAudience
	}
	cfg.JWKSURL = iss.srv.URL + "/jwks"
	a, err := New(context.Background(), v1alpha1.ProxyAuth{OIDC: &cfg},
		WithHTTPClient(iss.srv.Client()), WithClock(clock.now), WithTokenCache(entries, bytes),
		func(o *options) { o.jwksRefresh = -1 }) // the tests here make every fetch happen themselves
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a.(*oidcAuth)
}

// outcome is what Authenticate answered, comparable.
type outcome struct {
	User    string
	Claims  map[string]json.RawMessage
	Status  int
	Message string
}

func authenticate(a Authenticator, tok string) outcome {
	id, err := a.Authenticate(request("Bearer " + tok))
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return outcome{Message: "not an *Error: " + err.Error()}
		}
		return outcome{Status: e.Status, Message: e.Message}
	}
	return outcome{User: id.User, Claims: id.Attributes.Claims}
}

func sum(tok string) [sha256.Size]byte { return sha256.Sum256([]byte(tok)) }

// TestTokenCacheExact walks the ways a cached token stops being acceptable. At every step the
// cached authenticator must answer as an uncached one on the same issuer and clock, and the
// cache must (not) hold the tokens named.
func TestTokenCacheExact(t *testing.T) {
	iss := newTestIssuer(t)
	valid := iss.sign(t, "k1", claims(nil))
	shortLived := iss.sign(t, "k1", claims(map[string]any{"exp": t0.Add(time.Minute).Unix()}))
	nbfAtLeeway := iss.sign(t, "k1", claims(map[string]any{"nbf": t0.Add(nbfLeeway).Unix()}))
	nbfUpper := iss.sign(t, "k1", claims(map[string]any{"NBF": t0.Add(nbfLeeway).Unix()}))
	onK2 := iss.sign(t, "k2", claims(map[string]any{"sub": "bob"}))
	onK1b := iss.sign(t, "k1b", claims(map[string]any{"sub": "bob"}))
	noKid := iss.sign(t, "k4", claims(nil))
	forged := iss.sign(t, "k1b", claims(map[string]any{"sub": "mallory"})) // k1's kid, another key
	wrongAud := iss.sign(t, "k1", claims(map[string]any{"aud": "someone-else"}))
	expired := iss.sign(t, "k1", claims(map[string]any{"exp": t0.Add(-time.Second).Unix()}))
	tooLong := iss.sign(t, "k1", claims(map[string]any{"pad": strings.Repeat("x", MaxCachedTokenBytes)}))

	type step struct {
		at      time.Duration   // the clock, from t0
		publish []string        // the JWKS from this step on (nil: unchanged)
		token   string          // authenticated at this step
		err     string          // the refusal's message; "" is accepted
		hit     bool            // answered from the cache
		cached  map[string]bool // tokens (by value) the cache must, or must not, hold after the step
	}
	cases := map[string]struct {
		reason string
		cfg    v1alpha1.OIDCConfig // of the authenticators at the steps after the first (zero: unchanged)
		steps  []step
	}{
		"Hit": {
			reason: "A token verified once is answered from the cache while nothing changed.",
			steps: []step{
				{token: valid, cached: map[string]bool{valid: true}},
				{at: time.Minute, token: valid, hit: true},
			},
		},
		"ExpiredWhileCached": {
			reason: "go-oidc has no leeway for exp: still accepted at exp exactly, refused a second after; the entry goes.",
			steps: []step{
				{token: shortLived},
				{at: time.Minute, token: shortLived, hit: true},
				{at: time.Minute + time.Second, token: shortLived, err: "token expired", cached: map[string]bool{shortLived: false}},
			},
		},
		"NotYetValid": {
			reason: "nbf five minutes ahead is within go-oidc's leeway; with the clock stepped back a second it is not.",
			steps: []step{
				{token: nbfAtLeeway, cached: map[string]bool{nbfAtLeeway: true}},
				{token: nbfAtLeeway, hit: true},
				{at: -time.Second, token: nbfAtLeeway, err: "token not yet valid", cached: map[string]bool{nbfAtLeeway: false}},
			},
		},
		"NotYetValidUpperCase": {
			reason: "go-oidc reads an NBF claim as nbf (encoding/json matches keys case-insensitively): so does the cache.",
			steps: []step{
				{token: nbfUpper},
				{at: -time.Second, token: nbfUpper, err: "token not yet valid"},
			},
		},
		"KeyRotatedOut": {
			reason: "When the key set refreshes without the token's key, the entry is dropped at once and the token refused.",
			steps: []step{
				{token: valid},
				{publish: []string{"k2"}, token: valid, hit: true}, // not refetched yet: k1 is still the verifier's
				{at: JWKSRefetchInterval, token: onK2, cached: map[string]bool{valid: false, onK2: true}},
				{at: JWKSRefetchInterval, token: valid, err: "token signature invalid"},
			},
		},
		"KeyReplacedUnderSameKid": {
			reason: "A different key under the same kid is not the key that verified: the entry goes.",
			steps: []step{
				{token: valid},
				{publish: []string{"k1b"}, at: JWKSRefetchInterval, token: onK2, err: "token signature invalid"}, // k2 unknown: a refetch
				{at: JWKSRefetchInterval, token: valid, err: "token signature invalid", cached: map[string]bool{valid: false}},
				{at: JWKSRefetchInterval, token: onK1b},
			},
		},
		"KeyKeptOverRotation": {
			reason: "A refresh that keeps the token's key (a new key published beside it) keeps the entry.",
			steps: []step{
				{token: valid},
				{publish: []string{"k2", "k1"}, at: JWKSRefetchInterval, token: onK2},
				{at: JWKSRefetchInterval, token: valid, hit: true, cached: map[string]bool{valid: true, onK2: true}},
			},
		},
		"NoKid": {
			reason: "A token naming no kid is verified by any key of the set: cached, and dropped when its key goes.",
			steps: []step{
				{publish: []string{"k1", "k4"}, token: noKid},
				{token: noKid, hit: true},
				{publish: []string{"k1", "k2"}, at: JWKSRefetchInterval, token: onK2, cached: map[string]bool{noKid: false}},
				{at: JWKSRefetchInterval, token: noKid, err: "token signature invalid"},
			},
		},
		"AudienceChanged": {
			reason: "An auth change is a restart (config.RestartNeeded): the authenticator of the new audience has its own, empty cache and refuses the token.",
			cfg:    v1alpha1.OIDCConfig{Audience: "another-audience"},
			steps: []step{
				{token: valid},
				{token: valid, err: "token audience mismatch"},
			},
		},
		"IssuerChanged": {
			reason: "Likewise for the issuer.",
			cfg:    v1alpha1.OIDCConfig{Issuer: "https://other-issuer.test"},
			steps: []step{
				{token: valid},
				{token: valid, err: "token issuer mismatch"},
			},
		},
		"ClaimChanged": {
			reason: "Likewise for the user claim: the cached identity of the sub claim is not reused.",
			cfg:    v1alpha1.OIDCConfig{UserClaim: "email"},
			steps: []step{
				{token: valid},
				{token: valid, err: `token has no "email" claim`},
			},
		},
		"RefusedNeverEnter": {
			reason: "A forged signature, a wrong audience, an expired token never enter the cache.",
			steps: []step{
				{token: forged, err: "token signature invalid", cached: map[string]bool{forged: false}},
				{token: wrongAud, err: "token audience mismatch", cached: map[string]bool{wrongAud: false}},
				{token: expired, err: "token expired", cached: map[string]bool{expired: false}},
				{token: forged, err: "token signature invalid"},
			},
		},
		"TooLong": {
			reason: "A token longer than MaxCachedTokenBytes is verified every time.",
			steps: []step{
				{token: tooLong, cached: map[string]bool{tooLong: false}},
				{token: tooLong},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			iss.publish("k1")
			clock := &testClock{}
			cached := newCacheAuth(t, iss, clock, DefaultTokenCacheEntries, DefaultTokenCacheBytes, v1alpha1.OIDCConfig{})
			uncached := newCacheAuth(t, iss, clock, 0, 0, v1alpha1.OIDCConfig{})
			for i, s := range tc.steps {
				if i == 1 && tc.cfg != (v1alpha1.OIDCConfig{}) {
					if f := restartNeeded(tc.cfg); len(f) != 1 || f[0] != "auth" {
						t.Fatalf("config.RestartNeeded must name auth for an OIDC change, got %v", f)
					}
					cached = newCacheAuth(t, iss, clock, DefaultTokenCacheEntries, DefaultTokenCacheBytes, tc.cfg)
					uncached = newCacheAuth(t, iss, clock, 0, 0, tc.cfg)
				}
				if s.publish != nil {
					iss.publish(s.publish...)
				}
				clock.set(s.at)
				before := cached.TokenCacheStats().Hits
				want := authenticate(uncached, s.token)
				got := authenticate(cached, s.token)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s\nstep %d: the cached authenticator must answer as the uncached one: -want +got:\n%s", tc.reason, i, diff)
				}
				if diff := cmp.Diff(s.err, got.Message); diff != "" {
					t.Errorf("%s\nstep %d: -want refusal, +got refusal:\n%s", tc.reason, i, diff)
				}
				if diff := cmp.Diff(s.hit, cached.TokenCacheStats().Hits > before); diff != "" {
					t.Errorf("%s\nstep %d: -want hit, +got hit:\n%s", tc.reason, i, diff)
				}
				for tok, want := range s.cached {
					if diff := cmp.Diff(want, cached.cache.contains(sum(tok))); diff != "" {
						t.Errorf("%s\nstep %d: token %.20s…: -want cached, +got cached:\n%s", tc.reason, i, tok, diff)
					}
				}
			}
		})
	}
}

// restartNeeded is the proxy's config watcher's verdict on a change of the OIDC config from
// the tests' to cfg's fields over it.
func restartNeeded(cfg v1alpha1.OIDCConfig) []string {
	old := v1alpha1.OIDCConfig{Issuer: cacheIssuer, Audience: cacheAudience}
	next := old
	if cfg.Issuer != "" {
		next.Issuer = cfg.Issuer
	}
	if cfg.Audience != "" {
		next.Audience = cfg.Audience
	}
	next.UserClaim = cfg.UserClaim
	return config.RestartNeeded(&v1alpha1.ProxyConfig{Auth: v1alpha1.ProxyAuth{OIDC: &old}},
		&v1alpha1.ProxyConfig{Auth: v1alpha1.ProxyAuth{OIDC: &next}})
}

// TestTokenCacheBounds: the least recently used identity goes first when the entry or byte
// bound is reached.
func TestTokenCacheBounds(t *testing.T) {
	iss := newTestIssuer(t)
	toks := make([]string, 4)
	for i := range toks {
		toks[i] = iss.sign(t, "k1", claims(map[string]any{"sub": "user-" + string(rune('a'+i))}))
	}
	cases := map[string]struct {
		reason         string
		entries, bytes int
		order          []int // tokens authenticated, in order
		want           []bool
	}{
		"Entries": {
			reason:  "With room for 2, the third evicts the least recently used (token 1, after token 0 was used again).",
			entries: 2, bytes: DefaultTokenCacheBytes,
			order: []int{0, 1, 0, 2},
			want:  []bool{true, false, true, false},
		},
		"Bytes": {
			reason:  "A byte bound of two entries' worth behaves the same.",
			entries: 100, bytes: 2*entryOverhead + 2*(5*claimOverhead+100) + 20,
			order: []int{0, 1, 0, 2},
			want:  []bool{true, false, true, false},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := newCacheAuth(t, iss, &testClock{}, tc.entries, tc.bytes, v1alpha1.OIDCConfig{})
			for _, i := range tc.order {
				if o := authenticate(a, toks[i]); o.Message != "" {
					t.Fatalf("token %d: %s", i, o.Message)
				}
			}
			got := make([]bool, len(toks))
			for i, tok := range toks {
				got[i] = a.cache.contains(sum(tok))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\ncached tokens: -want +got:\n%s", tc.reason, diff)
			}
			st := a.TokenCacheStats()
			if st.Entries > tc.entries || st.Bytes > tc.bytes {
				t.Errorf("%s\nstats %+v beyond the bounds (%d entries, %d bytes)", tc.reason, st, tc.entries, tc.bytes)
			}
		})
	}
}

// TestTokenCacheConcurrent runs hits, misses, refusals and key refreshes at once (for -race),
// and checks that no refused token is ever accepted.
func TestTokenCacheConcurrent(t *testing.T) {
	iss := newTestIssuer(t)
	iss.publish("k1", "k2")
	clock := &testClock{}
	a := newCacheAuth(t, iss, clock, 8, DefaultTokenCacheBytes, v1alpha1.OIDCConfig{})
	var good []string
	for i := range 16 {
		good = append(good, iss.sign(t, []string{"k1", "k2"}[i%2], claims(map[string]any{"sub": "u" + string(rune('a'+i))})))
	}
	forged := iss.sign(t, "k1b", claims(nil))
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				if o := authenticate(a, good[(g*5+i)%len(good)]); o.Message != "" {
					bad.Add(1)
				}
				if o := authenticate(a, forged); o.Message == "" {
					bad.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			clock.advance(JWKSRefetchInterval)
			a.verifier.Load().keys.setKeys(a.verifier.Load().keys.current().keys) // a refresh, same keys
		}
	})
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d wrong answers under concurrency", bad.Load())
	}
}

// TestTokenCacheLateAdd: a verification that ran on a key set that a refresh has since
// replaced adds its identity after the refresh dropped what the new set lacks. get must not
// answer from it while the key is gone.
func TestTokenCacheLateAdd(t *testing.T) {
	iss := newTestIssuer(t)
	clock := &testClock{}
	a := newCacheAuth(t, iss, clock, DefaultTokenCacheEntries, DefaultTokenCacheBytes, v1alpha1.OIDCConfig{})
	tok := iss.sign(t, "k1", claims(nil))
	if o := authenticate(a, tok); o.Message != "" {
		t.Fatalf("first authentication: %s", o.Message)
	}
	keys := a.verifier.Load().keys
	old := keys.current()
	e := *a.cache.entries[sum(tok)] // what the verification on the old set produced
	w := window{exp: e.exp, nbf: e.nbf, hasNBF: e.hasNBF}

	iss.publish("k2")
	clock.advance(JWKSRefetchInterval)
	if o := authenticate(a, iss.sign(t, "k2", claims(nil))); o.Message != "" { // the refresh: k1 is gone
		t.Fatalf("a token on the new key: %s", o.Message)
	}
	if keys.current().version == old.version {
		t.Fatalf("the key set must have refreshed")
	}
	a.cache.add(e.sum, e.id, w, old, e.key, len(tok))
	if !a.cache.contains(sum(tok)) {
		t.Fatalf("the late add must be in the cache for this test to mean anything")
	}
	want := authenticate(newCacheAuth(t, iss, clock, 0, 0, v1alpha1.OIDCConfig{}), tok)
	if diff := cmp.Diff(want, authenticate(a, tok)); diff != "" {
		t.Errorf("a late add on a replaced key set: -want (uncached) +got:\n%s", diff)
	}
	if a.cache.contains(sum(tok)) {
		t.Errorf("the late entry must be dropped when its key is found gone")
	}
}
