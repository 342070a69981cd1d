package auth

import (
	"encoding/base64"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// cacheWorld is what a token-cache property run draws from: one issuer with five keys, a pool
// of tokens signed by each key with claims around the boundaries (exp, nbf, audience, issuer,
// user claim), and tokens no key verifies.
type cacheWorld struct {
	iss      *testIssuer
	tokens   []string
	unsigned map[string]bool // tokens no key of the issuer ever verifies
	keySets  [][]string      // JWKS contents a run switches between
	offsets  []time.Duration // clock settings around the pool's boundaries
}

func newCacheWorld(t testing.TB) *cacheWorld {
	t.Helper()
	w := &cacheWorld{iss: newTestIssuer(t), unsigned: map[string]bool{}}
	sec := func(d time.Duration) int64 { return t0.Add(d).Unix() }
	variants := []map[string]any{
		nil,
		{"exp": sec(30 * time.Second)},
		{"exp": sec(0)},
		{"exp": sec(-time.Minute)},
		{"exp": nil},
		{"exp": float64(sec(90*time.Second)) + 0.7},
		{"nbf": sec(nbfLeeway)},
		{"nbf": sec(10 * time.Minute)},
		{"nbf": sec(-time.Hour), "exp": sec(2 * time.Minute)},
		{"NBF": sec(nbfLeeway + time.Second)},
		{"Exp": sec(20 * time.Second)},
		{"aud": "someone-else"},
		{"aud": []string{"x", cacheAudience}},
		{"iss": "https://evil.test"},
		{"sub": "bob", "plan": "pro", "groups": []string{"sre"}},
		{"sub": 42},
		{"sub": ""},
	}
	for _, key := range []string{"k1", "k2", "k3", "k1b", "k4"} {
		for _, v := range variants {
			w.tokens = append(w.tokens, w.iss.sign(t, key, claims(v)))
		}
	}
	for _, tok := range []string{
		"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + b64(`{"iss":"`+cacheIssuer+`","aud":"`+cacheAudience+`","sub":"alice","exp":1900003600}`) + ".",
		hs256(t, claims(nil)),
		"abc.def.ghi",
	} {
		w.tokens = append(w.tokens, tok)
		w.unsigned[tok] = true
	}
	w.keySets = [][]string{{"k1"}, {"k1", "k2"}, {"k2"}, {"k1b"}, {"k1b", "k2", "k4"}, {"k4"}, {}, {"k3", "k1"}}
	w.offsets = []time.Duration{-time.Hour, -5*time.Minute - time.Second, -time.Second, 0, time.Second,
		19 * time.Second, 20 * time.Second, 21 * time.Second, 29 * time.Second, 30 * time.Second, 31 * time.Second,
		59 * time.Second, time.Minute, 61 * time.Second, 90 * time.Second, 91 * time.Second, 2 * time.Minute,
		2*time.Minute + time.Second, nbfLeeway, nbfLeeway + time.Second, time.Hour, time.Hour + time.Second, 2 * time.Hour}
	return w
}

// run interprets program as operations on a cached and an uncached authenticator that share
// the issuer and the clock: authenticate a token, set or move the clock, change the JWKS,
// let the refetch interval pass. After every authentication both must answer the same, a
// token the uncached one refused must not be in the cache, and a token no key signed never
// is.
func (w *cacheWorld) run(t *testing.T, program []byte) {
	w.iss.publish("k1")
	clock := &testClock{}
	a := newCacheAuth(t, w.iss, clock, 16, DefaultTokenCacheBytes, v1alpha1.OIDCConfig{})
	u := newCacheAuth(t, w.iss, clock, 0, 0, v1alpha1.OIDCConfig{})
	// The first bytes choose the few tokens of the run, so that each comes back often,
	// across clock and key set changes.
	var toks []int
	for len(program) > 0 && len(toks) < 4 {
		toks = append(toks, int(program[0])%len(w.tokens))
		program = program[1:]
	}
	if len(toks) == 0 {
		return
	}
	for i := 0; i+1 < len(program); i += 2 {
		op, arg := program[i], int(program[i+1])
		switch op % 6 {
		case 0, 1: // authenticate, twice as often as the rest
			n := toks[arg%len(toks)]
			tok := w.tokens[n]
			want := authenticate(u, tok)
			got := authenticate(a, tok)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("op %d (clock t0%+v, token %d): the cached authenticator must answer as the uncached one: -want +got:\n%s",
					i/2, clock.now().Sub(t0), n, diff)
			}
			if want.Message != "" && a.cache.contains(sum(tok)) {
				t.Fatalf("op %d: token %d was refused (%s) yet is cached", i/2, n, want.Message)
			}
			if va, vu := a.verifier.Load().keys.current().version, u.verifier.Load().keys.current().version; va != vu {
				t.Fatalf("op %d: the two authenticators' key sets diverged (versions %d and %d): the comparison is void", i/2, va, vu)
			}
		case 2:
			clock.set(w.offsets[arg%len(w.offsets)])
		case 3:
			clock.advance(time.Duration(int8(arg)) * time.Second)
		case 4:
			w.iss.publish(w.keySets[arg%len(w.keySets)]...)
		case 5:
			clock.advance(JWKSRefetchInterval)
		}
		for tok := range w.unsigned {
			if a.cache.contains(sum(tok)) {
				t.Fatalf("op %d: a token no key signed is cached", i/2)
			}
		}
	}
}

// FuzzTokenCache: on any sequence of clocks, key sets and tokens, the cached authenticator
// answers exactly as the uncached one (go test -fuzz FuzzTokenCache ./proxy/auth).
func FuzzTokenCache(f *testing.F) {
	w := newCacheWorld(f)
	f.Add([]byte{0, 0, 0, 0, 2, 5, 0, 0})
	f.Add([]byte{0, 1, 2, 6, 0, 1, 2, 7, 0, 1, 3, 200, 0, 1})
	f.Add([]byte{0, 0, 4, 2, 5, 0, 0, 17, 0, 0, 4, 0, 5, 0, 0, 0})
	f.Add([]byte{4, 4, 0, 68, 0, 68, 4, 5, 5, 0, 0, 68, 0, 51})
	f.Fuzz(func(t *testing.T, program []byte) {
		if len(program) > 400 {
			program = program[:400]
		}
		w.run(t, program)
	})
}

// TestTokenCacheProperty runs FuzzTokenCache's property on random programs: every run of the
// test suite, not only under -fuzz.
func TestTokenCacheProperty(t *testing.T) {
	w := newCacheWorld(t)
	runs := 300
	if testing.Short() {
		runs = 30
	}
	for seed := range runs {
		rng := rand.New(rand.NewPCG(uint64(seed), 15))
		program := make([]byte, 2*(20+rng.IntN(120)))
		for i := range program {
			program[i] = byte(rng.UintN(256))
		}
		t.Run(strconv.Itoa(seed), func(t *testing.T) { w.run(t, program) })
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
